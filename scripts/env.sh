# Sourced by the scripts (and by hand: `. scripts/env.sh`): points the v8 crate at the shared
# prebuilt V8 archive when this checkout sits beside one, so cargo never tries to download
# it. Elsewhere nothing is set and cargo's normal download applies.
_mizan_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
for _mizan_archive in "$_mizan_root"/../shared/v8/librusty_v8_*.a.gz; do
  if [ -f "$_mizan_archive" ]; then
    RUSTY_V8_ARCHIVE=$(cd "$(dirname "$_mizan_archive")" && pwd)/$(basename "$_mizan_archive")
    export RUSTY_V8_ARCHIVE
  fi
done
unset _mizan_root _mizan_archive
