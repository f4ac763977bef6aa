//! The module loader of every isolate, which loads nothing: a bundle is one self-contained ES
//! module. An `import` of anything else (a Node built-in, a package, a file) is refused when
//! the bundle loads, or when a render reaches a dynamic `import()`, with an error that names
//! the specifier, where it was imported, and what to do about it.

use deno_core::error::ModuleLoaderError;
use deno_core::{
    ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleResolveResponse, ModuleSpecifier,
    ResolutionKind, resolve_import,
};
use deno_error::JsErrorBox;

/// Resolves specifiers as URLs (the bundle's own path among them) and loads none.
pub(crate) struct Refuse;

impl ModuleLoader for Refuse {
    fn resolve(&self, specifier: &str, referrer: &str, _kind: ResolutionKind) -> ModuleResolveResponse {
        resolve_import(specifier, referrer).map_err(|e| {
            JsErrorBox::generic(format!(
                "cannot import \"{specifier}\" (from {referrer}): {e}; a bundle must be one self-contained ES \
                 module (esbuild `bundle: true`, `format: \"esm\"`)"
            ))
        })
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        ModuleLoadResponse::Sync(Err(refusal(specifier, referrer)))
    }
}

/// Why `specifier` cannot be loaded, and the fix.
fn refusal(specifier: &ModuleSpecifier, referrer: Option<&ModuleLoadReferrer>) -> ModuleLoaderError {
    let place = referrer.map_or(String::new(), |r| {
        let file = r.specifier.to_file_path().map_or_else(|()| r.specifier.to_string(), |p| p.display().to_string());
        format!(" (imported at {file}:{}:{})", r.line_number, r.column_number)
    });
    let hint = match specifier.as_str() {
        "node:async_hooks" => {
            "; Svelte's experimental asynchronous rendering imports it: keep it off (the Mizan adapter \
             never starts it) and let the build replace the import with an empty module, as \
             fixtures/apps/svelte/build.mjs does"
        }
        s if s.starts_with("node:") => "; the render node provides no Node built-ins, only web APIs",
        _ => "",
    };
    JsErrorBox::generic(format!(
        "cannot import \"{specifier}\"{place}: a bundle must be one self-contained ES module \
         (esbuild `bundle: true`, `format: \"esm\"`){hint}"
    ))
}
