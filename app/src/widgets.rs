//! Small view components shared by the page's live job views (the worker pool in `ui`, the
//! circle's jobs in `circle_view`).

use leptos::prelude::*;

/// One member's line in a live job view (the page's pool, a circle job): who, with a dot while
/// it holds work, a progress bar of its texts, and a detail line.
#[component]
pub(crate) fn MemberRow(
    class: String,
    label: String,
    busy: bool,
    total: f64,
    done: f64,
    detail: String,
) -> impl IntoView {
    view! {
        <li class=class>
            <span class="who">{label}{busy.then(|| view! { <span class="busy" aria-label="working">"●"</span> })}</span>
            <progress max=total prop:value=done></progress>
            <span class="muted">{detail}</span>
        </li>
    }
}

/// A throughput plot of `values` (nothing until there are two points).
#[component]
pub(crate) fn Spark(values: Vec<f64>, label: &'static str) -> impl IntoView {
    (values.len() > 1).then(|| {
        view! {
            <svg class="spark" viewBox="0 0 200 28" preserveAspectRatio="none" role="img" aria-label=label>
                <polyline points=sparkline(&values, 200.0, 28.0) fill="none" stroke="currentColor" stroke-width="1.5" />
            </svg>
        }
    })
}

/// The `points` of an SVG polyline `w × h` plotting `points` (scaled to their maximum, at
/// least 1).
fn sparkline(points: &[f64], w: f64, h: f64) -> String {
    let max = points.iter().copied().fold(1.0f64, f64::max);
    let n = points.len().max(2) - 1;
    points
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * w / n as f64;
            let y = h - (v / max) * (h - 2.0) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
