// Copyright the mizan-render authors. MIT license.
//
// The determinism prelude of `mizan-render parity --deterministic`: evaluated before the bundle
// loads, in every runtime a parity run compares, so that time and randomness are the same
// everywhere and a difference between pages is a real one.
//
// - `Date.now()`, `new Date()` (no argument) and `Date()` (called) see 2026-01-01T00:00:00Z,
//   always: the clock does not move (as in workerd, whose clock stands still while code runs).
//   `new Date(value)`, `Date.UTC`, `Date.parse` and the prototype are untouched. So do
//   `Intl.DateTimeFormat#format()` and `#formatToParts()` without a date, and `Temporal.Now`
//   where there is one (Deno, Bun).
// - `performance.now()` is 0.
// - `Math.random()` is mulberry32 seeded with 1.
// - `crypto.getRandomValues(array)` fills the array from mulberry32 seeded with 2 (after the
//   runtime's own call, so its argument checks and errors are the runtime's);
//   `crypto.randomUUID()` is a version 4 UUID of 16 bytes from that same stream. Where there
//   is no `crypto` (this node's isolates) nothing is added.
//
// The local time zone and the default locale are not JavaScript's to fix: Node, Deno, workerd
// and this node take them from TZ and LC_ALL / LC_MESSAGES / LANG. Run every runtime with
// TZ=UTC and LC_ALL=C.UTF-8 (UTC and en-US, as the edge).
//
// `globalThis[Symbol.for("mizan.parity.determinism")].reset()` re-seeds both streams: the
// runners call it before each case, so each page sees the same sequence whatever rendered
// before it in that runtime.
//
// A classic script that is also a valid ES module (no imports, no exports, no use of `this`,
// strict): the runners evaluate its text with an indirect eval, workerd imports it as a
// module (it forbids eval), and this node evaluates it as a script before the bundle.
(function mizanParityDeterminism() {
  "use strict";
  const KEY = Symbol.for("mizan.parity.determinism");
  const g = globalThis;
  if (Object.prototype.hasOwnProperty.call(g, KEY)) return; // installed already

  const NOW = 1767225600000; // Date.UTC(2026, 0, 1)
  const imul = Math.imul;
  const defineProperty = Object.defineProperty;

  /** mulberry32: a 32-bit state, each call the next 32-bit unsigned integer. */
  function mulberry32(seed) {
    let state = seed >>> 0;
    const stream = {
      next() {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = imul(t ^ (t >>> 15), t | 1);
        t ^= t + imul(t ^ (t >>> 7), t | 61);
        return (t ^ (t >>> 14)) >>> 0;
      },
      reset() {
        state = seed >>> 0;
      },
    };
    return stream;
  }
  const randomStream = mulberry32(1);
  const cryptoStream = mulberry32(2);

  /** Replaces `object[name]` keeping the property's attributes; the function keeps its name. */
  function replace(object, name, fn, length) {
    const was = Object.getOwnPropertyDescriptor(object, name);
    defineProperty(fn, "name", { value: name, configurable: true });
    defineProperty(fn, "length", { value: length, configurable: true });
    defineProperty(object, name, {
      value: fn,
      writable: was ? was.writable !== false : true,
      enumerable: was ? was.enumerable === true : false,
      configurable: true,
    });
  }

  // Date: a constructor that gives the fixed time when called without arguments, and is the
  // real Date otherwise (subclasses included: `new.target` is passed on).
  const RealDate = g.Date;
  const realToString = RealDate.prototype.toString;
  function Date(...args) {
    if (new.target === undefined) return Reflect.apply(realToString, new RealDate(NOW), []);
    return Reflect.construct(RealDate, args.length === 0 ? [NOW] : args, new.target);
  }
  Object.setPrototypeOf(Date, RealDate); // Date.UTC, Date.parse
  defineProperty(Date, "prototype", { value: RealDate.prototype, writable: false, enumerable: false, configurable: false });
  defineProperty(Date, "length", { value: 7, configurable: true });
  defineProperty(Date, "now", {
    value: function now() {
      return NOW;
    },
    writable: true,
    enumerable: false,
    configurable: true,
  });
  defineProperty(RealDate.prototype, "constructor", { value: Date, writable: true, enumerable: false, configurable: true });
  defineProperty(g, "Date", { value: Date, writable: true, enumerable: false, configurable: true });

  // Intl.DateTimeFormat formats "now" when given no date: the fixed time too.
  const DateTimeFormat = g.Intl && g.Intl.DateTimeFormat;
  if (typeof DateTimeFormat === "function") {
    const proto = DateTimeFormat.prototype;
    const format = Object.getOwnPropertyDescriptor(proto, "format");
    if (format && typeof format.get === "function") {
      const realGet = format.get;
      const bound = new WeakMap(); // one function per formatter, as the real getter gives
      const get = {
        get format() {
          const fn = Reflect.apply(realGet, this, []);
          let wrapped = bound.get(this);
          if (wrapped === undefined) {
            wrapped = (date) => fn(date === undefined ? NOW : date);
            bound.set(this, wrapped);
          }
          return wrapped;
        },
      };
      defineProperty(proto, "format", { ...format, get: Object.getOwnPropertyDescriptor(get, "format").get });
    }
    const formatToParts = Object.getOwnPropertyDescriptor(proto, "formatToParts");
    if (formatToParts && typeof formatToParts.value === "function") {
      const real = formatToParts.value;
      replace(proto, "formatToParts", function (date) {
        return Reflect.apply(real, this, [date === undefined ? NOW : date]);
      }, 1);
    }
  }

  // Temporal (Deno, Bun): Temporal.Now at the fixed instant, in the runtime's own time zone.
  const Temporal = g.Temporal;
  if (typeof Temporal === "object" && Temporal !== null && typeof Temporal.Now === "object") {
    const Now = Temporal.Now;
    const instant = () => Temporal.Instant.fromEpochMilliseconds(NOW);
    const zoned = (zone) => instant().toZonedDateTimeISO(zone === undefined ? Now.timeZoneId() : zone);
    replace(Now, "instant", () => instant(), 0);
    replace(Now, "zonedDateTimeISO", (zone) => zoned(zone), 0);
    replace(Now, "plainDateTimeISO", (zone) => zoned(zone).toPlainDateTime(), 0);
    replace(Now, "plainDateISO", (zone) => zoned(zone).toPlainDate(), 0);
    replace(Now, "plainTimeISO", (zone) => zoned(zone).toPlainTime(), 0);
  }

  // performance.now(): the time since the isolate started, which nothing fixes otherwise.
  if (typeof g.performance === "object" && g.performance !== null) {
    try {
      defineProperty(g.performance, "now", {
        value: function now() {
          return 0;
        },
        writable: true,
        enumerable: false,
        configurable: true,
      });
    } catch {
      // a runtime whose performance object refuses new properties keeps its clock
    }
  }

  replace(Math, "random", function () {
    return randomStream.next() / 4294967296;
  }, 0);

  /** Fills `bytes` (a Uint8Array) from the crypto stream, four bytes per number, low first. */
  function fill(bytes) {
    const n = bytes.length;
    for (let i = 0; i < n; i += 4) {
      let word = cryptoStream.next();
      for (let j = 0; j < 4 && i + j < n; j++) {
        bytes[i + j] = word & 0xff;
        word >>>= 8;
      }
    }
  }

  const crypto = g.crypto;
  if (typeof crypto === "object" && crypto !== null && typeof crypto.getRandomValues === "function") {
    const realGetRandomValues = crypto.getRandomValues;
    replace(crypto, "getRandomValues", function (array) {
      // The runtime's own call first: the same type checks, the same errors (a Float32Array,
      // more than 65536 bytes); then its random bytes are overwritten.
      const result = Reflect.apply(realGetRandomValues, crypto, [array]);
      fill(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
      return result;
    }, 1);
    replace(crypto, "randomUUID", function () {
      const b = new Uint8Array(16);
      fill(b);
      b[6] = (b[6] & 0x0f) | 0x40; // version 4
      b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
      let hex = "";
      for (let i = 0; i < 16; i++) {
        hex += (b[i] + 0x100).toString(16).slice(1);
        if (i === 3 || i === 5 || i === 7 || i === 9) hex += "-";
      }
      return hex;
    }, 0);
  }

  defineProperty(g, KEY, {
    value: Object.freeze({
      now: NOW,
      reset() {
        randomStream.reset();
        cryptoStream.reset();
      },
    }),
    writable: false,
    enumerable: false,
    configurable: false,
  });
})();
