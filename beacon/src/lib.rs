//! The beacon's measurement core: web-vitals 6 semantics for LCP, INP, CLS, FCP and TTFB, compiled to a wasm
//! module with numeric exports only, through wasm-bindgen (and, through binaryen's `wasm2js`, to the JS fallback
//! that runs the same code where WebAssembly cannot).
//!
//! Data path: the page's `PerformanceObserver`s and lifecycle listeners live in `beacon/js/beacon.js`; it hands
//! every entry's numbers to the exports below ([`exports`]), which keep the page view's state in [`State`]: the
//! LCP/FCP/TTFB values gated by the first-hidden time and `activationStart`, the ten longest interactions and the
//! p98 pick for INP, the layout-shift session windows for CLS. When the page is hidden the JS asks [`State::take`]
//! for each metric: a value inside the bounds the collector accepts (`vitals::Metric::max_value`), never handed
//! out twice for one page view, is what goes on the wire (`vitals::wire`, version 1). Strings (selectors, URLs)
//! never enter the wasm: they stay in JS, keyed by the interaction id / shift sequence number returned from here.
//!
//! No allocation, no formatting, no panics on any path: the module stays a few hundred bytes.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use vitals::Metric;

/// How many of the longest interactions INP keeps (web-vitals' `MAX_INTERACTIONS_TO_CONSIDER`).
pub const MAX_INTERACTIONS: usize = 10;
/// One worst interaction is skipped per this many interactions (the p98 approximation).
pub const INTERACTIONS_PER_SKIP: f64 = 50.0;
/// A layout shift joins the open session window only if it comes less than this after the previous shift (ms).
pub const SESSION_GAP_MS: f64 = 1000.0;
/// ... and less than this after the window's first shift (ms).
pub const SESSION_MAX_MS: f64 = 5000.0;
/// INP after a bfcache restore whose interactions never crossed the 40 ms event-timing threshold (web-vitals 6).
pub const INP_BELOW_THRESHOLD_MS: f64 = 8.0;

const LCP: usize = 0;
const INP: usize = 1;
const CLS: usize = 2;
const FCP: usize = 3;

/// An `f64` cell that can live in a `static` without `unsafe`: the wasm is single-threaded, and without the
/// atomics target feature these compile to plain loads and stores.
pub struct Cell(AtomicU64);

impl Cell {
    const fn new(v: f64) -> Cell {
        Cell(AtomicU64::new(v.to_bits()))
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
}

/// One page view's measurements. A bfcache restore starts a new one ([`State::reset`]).
pub struct State {
    /// Current value of each metric (index = `vitals::Metric::ALL` order), -1 while there is none.
    values: [Cell; 5],
    /// Bit per metric: already handed out for this page view.
    sent: AtomicU32,
    /// Bit 0: LCP finalised (first input or hidden). Bit 1: this view is a bfcache restore.
    flags: AtomicU32,
    /// `interactionCount` when this view started.
    count_base: Cell,
    /// The longest interactions, longest first (ties in arrival order, like web-vitals' stable sort).
    inp_ids: [Cell; MAX_INTERACTIONS],
    inp_lat: [Cell; MAX_INTERACTIONS],
    inp_len: AtomicU32,
    /// The open session window: sum, first and last shift time, its largest shift's value and sequence number.
    win_sum: Cell,
    win_first: Cell,
    win_last: Cell,
    win_big: Cell,
    win_big_seq: Cell,
    /// The largest window's largest shift (sequence number given by the JS), -1 when none.
    cls_seq: Cell,
}

const FINAL_LCP: u32 = 1;
const BFCACHE: u32 = 2;

#[allow(clippy::declare_interior_mutable_const)]
const NONE: Cell = Cell::new(-1.0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Cell = Cell::new(0.0);

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// An empty page view.
    pub const fn new() -> State {
        State {
            values: [NONE, NONE, ZERO, NONE, NONE],
            sent: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            count_base: ZERO,
            inp_ids: [ZERO; MAX_INTERACTIONS],
            inp_lat: [ZERO; MAX_INTERACTIONS],
            inp_len: AtomicU32::new(0),
            win_sum: ZERO,
            win_first: ZERO,
            win_last: ZERO,
            win_big: ZERO,
            win_big_seq: NONE,
            cls_seq: NONE,
        }
    }

    /// Starts a new page view: `interaction_count` is `performance.interactionCount` now, `bfcache` whether the
    /// view is a back/forward-cache restore.
    pub fn reset(&self, interaction_count: f64, bfcache: bool) {
        for (i, v) in self.values.iter().enumerate() {
            v.set(if i == CLS { 0.0 } else { -1.0 });
        }
        self.sent.store(0, Relaxed);
        self.flags.store(if bfcache { BFCACHE } else { 0 }, Relaxed);
        self.count_base.set(interaction_count);
        self.inp_len.store(0, Relaxed);
        self.win_sum.set(0.0);
        self.win_big_seq.set(-1.0);
        self.cls_seq.set(-1.0);
    }

    /// A paint or response time for LCP (0), FCP (3) or TTFB (4): counts only if it happened before the page was
    /// first hidden; the value is relative to `activation_start` (prerendering), floored at 0. LCP entries after
    /// [`State::finalize_lcp`] are ignored. Returns whether the value was taken.
    pub fn timing(
        &self,
        metric: usize,
        time: f64,
        activation_start: f64,
        first_hidden: f64,
    ) -> bool {
        let final_lcp = self.flags.load(Relaxed) & FINAL_LCP != 0;
        let Some(cell) = self.values.get(metric) else {
            return false;
        };
        if metric == INP || metric == CLS || (metric == LCP && final_lcp) || time >= first_hidden {
            return false;
        }
        let v = time - activation_start;
        cell.set(if v > 0.0 { v } else { 0.0 });
        true
    }

    /// LCP is final: the first trusted keydown or click, or the page was hidden.
    pub fn finalize_lcp(&self) {
        self.flags.fetch_or(FINAL_LCP, Relaxed);
    }

    /// One event-timing entry (`interaction_id` 0 = not an interaction). Returns -1 if the entry changes nothing;
    /// otherwise it is now its interaction's longest among the kept candidates (the JS keeps it for attribution)
    /// and the return value is the id of the interaction that fell out of the ten (the JS forgets it), or 0.
    pub fn event(&self, interaction_id: f64, duration: f64) -> f64 {
        if interaction_id == 0.0 {
            return -1.0;
        }
        let len = (self.inp_len.load(Relaxed) as usize).min(MAX_INTERACTIONS);
        let mut at = len;
        for i in 0..len {
            if self.inp_ids[i].get() == interaction_id {
                at = i;
            }
        }
        if at < len {
            if duration <= self.inp_lat[at].get() {
                return -1.0;
            }
            // Take it out; it is re-inserted below at its new rank.
            for i in at..len - 1 {
                self.inp_ids[i].set(self.inp_ids[i + 1].get());
                self.inp_lat[i].set(self.inp_lat[i + 1].get());
            }
            self.insert(len - 1, interaction_id, duration);
            return 0.0;
        }
        if len < MAX_INTERACTIONS {
            self.insert(len, interaction_id, duration);
            return 0.0;
        }
        let last = &self.inp_lat[MAX_INTERACTIONS - 1];
        if duration > last.get() {
            let dropped = self.inp_ids[MAX_INTERACTIONS - 1].get();
            self.insert(len, interaction_id, duration);
            return dropped;
        }
        -1.0
    }

    /// Inserts into the first `len` (sorted) candidates after every one at least as long, dropping the 11th.
    fn insert(&self, len: usize, id: f64, lat: f64) {
        let mut pos = 0;
        while pos < len && self.inp_lat[pos].get() >= lat {
            pos += 1;
        }
        let new_len = if len < MAX_INTERACTIONS { len + 1 } else { len };
        if pos >= new_len {
            return;
        }
        let mut i = new_len - 1;
        while i > pos {
            self.inp_ids[i].set(self.inp_ids[i - 1].get());
            self.inp_lat[i].set(self.inp_lat[i - 1].get());
            i -= 1;
        }
        self.inp_ids[pos].set(id);
        self.inp_lat[pos].set(lat);
        self.inp_len.store(new_len as u32, Relaxed);
    }

    /// Recomputes INP with `performance.interactionCount` now: the candidate at `min(len - 1, floor(n / 50))`,
    /// `n` counting this view's interactions. Returns the chosen interaction id (-1 when none or synthetic).
    pub fn inp(&self, interaction_count: f64) -> f64 {
        let n = interaction_count - self.count_base.get();
        let len = (self.inp_len.load(Relaxed) as usize).min(MAX_INTERACTIONS);
        if len == 0 {
            if n > 0.0 && self.flags.load(Relaxed) & BFCACHE != 0 {
                self.values[INP].set(INP_BELOW_THRESHOLD_MS);
            }
            return -1.0;
        }
        let mut idx = 0;
        let mut k = INTERACTIONS_PER_SKIP;
        while k <= n && idx + 1 < len {
            idx += 1;
            k += INTERACTIONS_PER_SKIP;
        }
        self.values[INP].set(self.inp_lat[idx].get());
        self.inp_ids[idx].get()
    }

    /// One `layout-shift` entry; `seq` is the JS's sequence number for it (for attribution). Shifts after recent
    /// input do not count. Returns the sequence number of the open window's largest shift, so the JS needs to
    /// keep only that entry (and the CLS window's) rather than every shift of a long-lived page.
    pub fn shift(&self, value: f64, start: f64, had_recent_input: bool, seq: f64) -> f64 {
        if !had_recent_input {
            self.add_shift(value, start, seq);
        }
        self.win_big_seq.get()
    }

    fn add_shift(&self, value: f64, start: f64, seq: f64) {
        let sum = self.win_sum.get();
        if sum != 0.0
            && start - self.win_last.get() < SESSION_GAP_MS
            && start - self.win_first.get() < SESSION_MAX_MS
        {
            self.win_sum.set(sum + value);
            self.win_last.set(start);
            // web-vitals picks the later of equal shifts (`a.value > b.value ? a : b`).
            if value >= self.win_big.get() {
                self.win_big.set(value);
                self.win_big_seq.set(seq);
            }
        } else {
            self.win_sum.set(value);
            self.win_first.set(start);
            self.win_last.set(start);
            self.win_big.set(value);
            self.win_big_seq.set(seq);
        }
    }

    /// After each observer batch, like web-vitals: the open window becomes CLS if it is the largest so far.
    /// Returns the sequence number of the CLS window's largest shift (-1 when none).
    pub fn flush_shifts(&self) -> f64 {
        let sum = self.win_sum.get();
        if sum > self.values[CLS].get() {
            self.values[CLS].set(sum);
            self.cls_seq.set(self.win_big_seq.get());
        }
        self.cls_seq.get()
    }

    /// The value to send for a metric, or -1: none yet, already sent for this page view, out of the bounds the
    /// collector accepts, or CLS before FCP. A value handed out is marked sent.
    pub fn take(&self, metric: usize) -> f64 {
        let Some(m) = Metric::ALL.get(metric) else {
            return -1.0;
        };
        let bit = 1 << metric;
        let v = self.values[metric].get();
        let ready = metric != CLS || self.values[FCP].get() >= 0.0;
        if !ready || self.sent.load(Relaxed) & bit != 0 || !(v >= 0.0 && v <= m.max_value()) {
            return -1.0;
        }
        self.sent.fetch_or(bit, Relaxed);
        v
    }
}

/// The module's exports, through `#[wasm_bindgen]` (short `js_name`s keep `beacon.js` small; each maps to one
/// [`State`] method on the page's single view; numbers only, so wasm-bindgen's glue adds no conversions). The
/// macro's `no_mangle` wrappers are the only thing `unsafe_code` flags here; there is no `unsafe` of our own.
#[allow(unsafe_code)]
pub mod exports {
    use super::State;
    use wasm_bindgen::prelude::wasm_bindgen;

    static S: State = State::new();

    /// [`State::reset`].
    #[wasm_bindgen(js_name = r)]
    pub fn reset(interaction_count: f64, bfcache: i32) {
        S.reset(interaction_count, bfcache != 0)
    }
    /// [`State::timing`].
    #[wasm_bindgen(js_name = t)]
    pub fn timing(metric: i32, time: f64, activation_start: f64, first_hidden: f64) -> i32 {
        S.timing(metric as usize, time, activation_start, first_hidden) as i32
    }
    /// [`State::finalize_lcp`].
    #[wasm_bindgen(js_name = f)]
    pub fn finalize_lcp() {
        S.finalize_lcp()
    }
    /// [`State::event`].
    #[wasm_bindgen(js_name = e)]
    pub fn event(interaction_id: f64, duration: f64) -> f64 {
        S.event(interaction_id, duration)
    }
    /// [`State::inp`].
    #[wasm_bindgen(js_name = n)]
    pub fn inp(interaction_count: f64) -> f64 {
        S.inp(interaction_count)
    }
    /// [`State::shift`].
    #[wasm_bindgen(js_name = l)]
    pub fn shift(value: f64, start: f64, had_recent_input: i32, seq: f64) -> f64 {
        S.shift(value, start, had_recent_input != 0, seq)
    }
    /// [`State::flush_shifts`].
    #[wasm_bindgen(js_name = c)]
    pub fn flush_shifts() -> f64 {
        S.flush_shifts()
    }
    /// [`State::take`].
    #[wasm_bindgen(js_name = v)]
    pub fn take(metric: i32) -> f64 {
        S.take(metric as usize)
    }
}

#[cfg(test)]
mod tests;
