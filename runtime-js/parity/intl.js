// Copyright the mizan-render authors. MIT license.
//
// The Intl recorder of `mizan-render parity`: Intl output depends on each runtime's ICU data,
// so when pages differ the report says which Intl calls each runtime made and what they gave.
// It wraps the common formatting entry points without changing what they return:
//
//   Intl.DateTimeFormat   #format #formatToParts #formatRange #formatRangeToParts
//   Intl.NumberFormat     #format #formatToParts #formatRange #formatRangeToParts
//   Intl.Collator         #compare
//   Intl.PluralRules      #select #selectRange
//   Intl.RelativeTimeFormat, Intl.ListFormat, Intl.DurationFormat   #format #formatToParts
//   Intl.DisplayNames     #of
//   Date.prototype        toLocaleString toLocaleDateString toLocaleTimeString
//   Number.prototype, BigInt.prototype   toLocaleString
//   String.prototype      localeCompare toLocaleUpperCase toLocaleLowerCase
//
// Between `start()` and `stop()` of `globalThis[Symbol.for("mizan.parity.intl")]` each call
// is recorded as `{call, locale, result}` (the locale the call resolved to; `result` the
// string, a number for `compare`/`localeCompare`, the parts' text joined for `…ToParts`), the
// first LIMIT calls only; `stop()` returns them. Outside start/stop nothing is recorded.
//
// A classic script that is also a valid ES module (no imports, no exports, no use of `this`,
// strict): the runners evaluate its text with an indirect eval, workerd imports it as a
// module, and this node can evaluate it as a script.
(function mizanParityIntl() {
  "use strict";
  const KEY = Symbol.for("mizan.parity.intl");
  const g = globalThis;
  if (Object.prototype.hasOwnProperty.call(g, KEY)) return; // installed already
  const Intl = g.Intl;
  if (typeof Intl !== "object" || Intl === null) return;

  const LIMIT = 20;
  const defineProperty = Object.defineProperty;
  const getDescriptor = Object.getOwnPropertyDescriptor;
  const apply = Reflect.apply;

  let calls = null; // the list being recorded, or null

  function recording() {
    return calls !== null && calls.length < LIMIT;
  }

  function record(call, locale, result) {
    if (typeof result === "object" && result !== null && Array.isArray(result)) {
      // formatToParts and the like: the text the parts make
      let text = "";
      for (let i = 0; i < result.length; i++) text += String(result[i] && result[i].value);
      result = text;
    } else if (typeof result === "bigint") {
      result = String(result);
    }
    calls.push({ call, locale: locale === undefined ? null : locale, result });
  }

  /** The locale an Intl object resolved to (`resolvedOptions().locale`). */
  function resolvedLocale(resolvedOptions, object) {
    try {
      return apply(resolvedOptions, object, []).locale;
    } catch {
      return undefined;
    }
  }

  /** The locale `new Constructor(locales)` resolves to: what a toLocale… call with `locales` uses. */
  function localeOf(Constructor, locales) {
    try {
      return new Constructor(locales).resolvedOptions().locale;
    } catch {
      try {
        return locales === undefined ? undefined : String(locales);
      } catch {
        return undefined;
      }
    }
  }

  function named(fn, name, length) {
    defineProperty(fn, "name", { value: name, configurable: true });
    defineProperty(fn, "length", { value: length, configurable: true });
    return fn;
  }

  /** Wraps the method `name` of `proto`; `locale(receiver, args)` says the locale to record. */
  function wrapMethod(proto, label, name, locale) {
    const was = proto && getDescriptor(proto, name);
    if (!was || typeof was.value !== "function") return;
    const real = was.value;
    const wrapped = {
      [name](...args) {
        const result = apply(real, this, args);
        if (recording()) {
          try {
            record(label + name, locale(this, args), result);
          } catch {
            // recording never changes the call
          }
        }
        return result;
      },
    }[name];
    defineProperty(proto, name, { ...was, value: named(wrapped, name, real.length) });
  }

  /**
   * Wraps a getter that returns a bound function (`format`, `compare`): the bound function is
   * wrapped once per object, so `f.format === f.format` as before.
   */
  function wrapBoundGetter(proto, label, name, resolvedOptions) {
    const was = proto && getDescriptor(proto, name);
    if (!was || typeof was.get !== "function") return;
    const realGet = was.get;
    const bound = new WeakMap();
    const get = {
      get() {
        const fn = apply(realGet, this, []); // throws for a wrong receiver, as before
        const object = this;
        let wrapped = bound.get(object);
        if (wrapped === undefined) {
          wrapped = named((...args) => {
            const result = apply(fn, undefined, args);
            if (recording()) {
              try {
                record(label + name, resolvedLocale(resolvedOptions, object), result);
              } catch {
                // recording never changes the call
              }
            }
            return result;
          }, "", fn.length);
          bound.set(object, wrapped);
        }
        return wrapped;
      },
    }.get;
    defineProperty(proto, name, { ...was, get: named(get, "get " + name, 0) });
  }

  function intlClass(className, bound, methods) {
    const C = Intl[className];
    if (typeof C !== "function" || !C.prototype) return;
    const proto = C.prototype;
    const resolvedOptions = proto.resolvedOptions;
    const label = "Intl." + className + "#";
    const locale = (object) => resolvedLocale(resolvedOptions, object);
    for (const name of bound) wrapBoundGetter(proto, label, name, resolvedOptions);
    for (const name of methods) wrapMethod(proto, label, name, locale);
  }

  intlClass("DateTimeFormat", ["format"], ["formatToParts", "formatRange", "formatRangeToParts"]);
  intlClass("NumberFormat", ["format"], ["formatToParts", "formatRange", "formatRangeToParts"]);
  intlClass("Collator", ["compare"], []);
  intlClass("PluralRules", [], ["select", "selectRange"]);
  intlClass("RelativeTimeFormat", [], ["format", "formatToParts"]);
  intlClass("ListFormat", [], ["format", "formatToParts"]);
  intlClass("DurationFormat", [], ["format", "formatToParts"]);
  intlClass("DisplayNames", [], ["of"]);

  const DateTimeFormat = Intl.DateTimeFormat;
  const NumberFormat = Intl.NumberFormat;
  const Collator = Intl.Collator;
  const dateLocale = (_, args) => localeOf(DateTimeFormat, args[0]);
  const numberLocale = (_, args) => localeOf(NumberFormat, args[0]);
  const collatorLocale = (_, args) => localeOf(Collator, args[1]);
  const caseLocale = (_, args) => localeOf(Collator, args[0]);
  for (const name of ["toLocaleString", "toLocaleDateString", "toLocaleTimeString"]) {
    wrapMethod(g.Date.prototype, "Date#", name, dateLocale);
  }
  wrapMethod(Number.prototype, "Number#", "toLocaleString", numberLocale);
  if (typeof g.BigInt === "function") wrapMethod(g.BigInt.prototype, "BigInt#", "toLocaleString", numberLocale);
  wrapMethod(String.prototype, "String#", "localeCompare", collatorLocale);
  wrapMethod(String.prototype, "String#", "toLocaleUpperCase", caseLocale);
  wrapMethod(String.prototype, "String#", "toLocaleLowerCase", caseLocale);

  defineProperty(g, KEY, {
    value: Object.freeze({
      limit: LIMIT,
      /** Starts recording, into a new list. */
      start() {
        calls = [];
      },
      /** Stops recording; the calls recorded since start() (at most LIMIT). */
      stop() {
        const out = calls === null ? [] : calls;
        calls = null;
        return out;
      },
    }),
    writable: false,
    enumerable: false,
    configurable: false,
  });
})();
