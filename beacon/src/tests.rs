//! The core's semantics on the host (`cargo test` in beacon/), against web-vitals 6.2.3's rules. The same code
//! runs in Chromium in tests/browser, compared with web-vitals itself.

use super::*;

const INF: f64 = f64::INFINITY;

#[test]
fn timings_are_relative_to_activation_floored_and_cut_at_first_hidden() {
    let s = State::new();
    assert!(s.timing(3, 900.0, 100.0, INF));
    assert!(s.timing(4, 50.0, 100.0, INF));
    assert!(
        !s.timing(0, 2000.0, 0.0, 1500.0),
        "painted after the page was hidden"
    );
    assert_eq!(s.take(3), 800.0);
    assert_eq!(s.take(4), 0.0);
    assert_eq!(s.take(0), -1.0);
    assert_eq!(s.take(3), -1.0, "never twice for one page view");
}

#[test]
fn lcp_stops_at_first_input() {
    let s = State::new();
    assert!(s.timing(0, 1200.0, 0.0, INF));
    s.finalize_lcp();
    assert!(!s.timing(0, 3000.0, 0.0, INF));
    assert_eq!(s.take(0), 1200.0);
}

#[test]
fn inp_keeps_ten_longest_and_skips_one_per_fifty() {
    let s = State::new();
    assert_eq!(s.inp(0.0), -1.0, "no interaction, no INP");
    assert_eq!(s.take(1), -1.0);
    // 12 interactions of 40..=150 ms: ids 1..=12.
    for id in 1..=10 {
        assert_eq!(s.event(id as f64, 40.0 + 10.0 * id as f64), 0.0);
    }
    assert_eq!(s.event(11.0, 150.0), 1.0, "the shortest, 1, falls out");
    assert_eq!(s.event(12.0, 160.0), 2.0);
    // A shorter entry of a kept interaction changes nothing; nor does one shorter than the 10th longest.
    assert_eq!(s.event(12.0, 41.0), -1.0);
    assert_eq!(s.event(1.0, 45.0), -1.0, "shorter than the 10th longest");
    assert_eq!(s.event(0.0, 400.0), -1.0, "not an interaction");
    assert_eq!(s.inp(49.0), 12.0);
    assert_eq!(s.values[INP].get(), 160.0);
    assert_eq!(s.inp(50.0), 11.0, "one skipped per 50 interactions");
    assert_eq!(s.inp(1000.0), 3.0, "never past the 10th candidate");
    assert_eq!(s.values[INP].get(), 70.0);
    // Ties keep arrival order: a second 160 ms interaction ranks after the first.
    assert_eq!(s.event(99.0, 160.0), 3.0);
    assert_eq!(s.inp(0.0), 12.0);
    assert_eq!(s.inp(50.0), 99.0);
    // An interaction that grows moves up.
    assert_eq!(
        s.event(5.0, 500.0),
        0.0,
        "kept already: moves up, nothing falls out"
    );
    assert_eq!(s.inp(1.0), 5.0);
    assert_eq!(s.take(1), 500.0);
}

#[test]
fn inp_counts_interactions_of_this_view_only_and_reports_8ms_after_a_restore() {
    let s = State::new();
    s.event(1.0, 300.0);
    s.reset(70.0, true);
    assert_eq!(s.inp(75.0), -1.0);
    assert_eq!(s.take(1), INP_BELOW_THRESHOLD_MS);
    s.reset(70.0, false);
    s.inp(75.0);
    assert_eq!(s.take(1), -1.0, "only after a bfcache restore");
}

#[test]
fn cls_is_the_largest_session_window_after_fcp() {
    let s = State::new();
    // Window 1: 0.1 at 100 ms, 0.05 at 900 ms. Gap of 1 s opens window 2: 0.12 at 1900, 0.02 at 2000.
    assert_eq!(s.shift(0.1, 100.0, false, 0.0), 0.0);
    assert_eq!(
        s.shift(0.05, 900.0, false, 1.0),
        0.0,
        "the open window's largest stays"
    );
    assert_eq!(s.flush_shifts(), 0.0);
    assert_eq!(s.shift(0.12, 1900.0, false, 2.0), 2.0, "a new window");
    assert_eq!(s.shift(0.5, 1950.0, true, 3.0), 2.0, "after input: ignored");
    assert_eq!(s.flush_shifts(), 0.0, "0.12 < 0.15");
    s.shift(0.04, 2000.0, false, 4.0);
    assert_eq!(
        s.flush_shifts(),
        2.0,
        "0.16 > 0.15: window 2, its largest shift"
    );
    assert_eq!(s.take(2), -1.0, "not before FCP");
    s.timing(3, 50.0, 0.0, INF);
    assert!((s.take(2) - 0.16).abs() < 1e-12);
}

#[test]
fn a_window_lasts_at_most_five_seconds() {
    let s = State::new();
    for i in 0..7 {
        s.shift(0.1, 900.0 * i as f64, false, i as f64);
        s.flush_shifts();
    }
    // 0, 900, ..., 4500 are within 5 s of 0 (6 shifts); 5400 opens a new window.
    assert!((s.values[CLS].get() - 0.6).abs() < 1e-12);
}

#[test]
fn like_web_vitals_cls_is_compared_once_per_observer_batch() {
    let s = State::new();
    s.shift(0.3, 0.0, false, 0.0);
    s.shift(0.1, 3000.0, false, 1.0);
    s.flush_shifts();
    assert_eq!(s.values[CLS].get(), 0.1);
}

#[test]
fn values_outside_what_the_collector_accepts_are_not_sent() {
    let s = State::new();
    s.timing(4, Metric::Ttfb.max_value() + 1.0, 0.0, INF);
    assert_eq!(s.take(4), -1.0);
    assert_eq!(s.take(7), -1.0);
    assert!(!s.timing(9, 1.0, 0.0, INF));
}
