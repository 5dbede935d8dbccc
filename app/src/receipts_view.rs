//! The Receipts view: my jobs' receipts with ✓ included / ✓ witnessed, the log's witness
//! status, and a log-growth plot. Checking is `crate::light::check` (async, off the render
//! path); it runs when the view opens and on "Check now".

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::light::{self, Report};

/// SVG polyline points for the growth plot (time → x, size → y) in a `w × h` box.
fn plot_points(growth: &[(f64, u64)], w: f64, h: f64) -> String {
    if growth.is_empty() {
        return String::new();
    }
    let (t0, t1) = (growth[0].0, growth[growth.len() - 1].0);
    let s_max = growth.iter().map(|g| g.1).max().unwrap_or(0).max(1) as f64;
    growth
        .iter()
        .enumerate()
        .map(|(i, &(t, s))| {
            let x = if t1 > t0 {
                (t - t0) / (t1 - t0) * w
            } else if growth.len() > 1 {
                i as f64 / (growth.len() - 1) as f64 * w
            } else {
                w
            };
            let y = h - (s as f64 / s_max) * h;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[component]
pub fn ReceiptsPanel() -> impl IntoView {
    let (report, set_report) = signal(None::<Report>);
    let (busy, set_busy) = signal(false);
    let run = move || {
        if busy.get_untracked() {
            return;
        }
        set_busy.set(true);
        spawn_local(async move {
            let r = light::check().await;
            set_report.set(Some(r));
            set_busy.set(false);
        });
    };
    run();

    view! {
        <div class="receipts" data-testid="receipts">
            <div class="row">
                <p class="muted">
                    "Every shard another circle member computes for you leaves a signed receipt in the relay's public log — commitments only, never your text or vectors."
                </p>
                <button on:click=move |_| run() disabled=move || busy.get()>
                    {move || if busy.get() { "Checking…" } else { "Check now" }}
                </button>
            </div>
            {move || report.get().map(|r| {
                let summary = if let Some(e) = &r.error {
                    view! { <p class="notice warn" data-testid="log-status">{format!("✗ {e}")}</p> }.into_any()
                } else {
                    view! {
                        <p class="ok" data-testid="log-status">
                            {format!(
                                "{} log {} · {} entries · cosigned by {} witnesses ({} needed)",
                                if r.witnessed { "✓" } else { "✗" },
                                r.origin, r.size, r.cosigners, r.quorum
                            )}
                        </p>
                    }.into_any()
                };
                let changed = r.keys_changed.then(|| view! {
                    <p class="notice warn">"This relay now publishes different log keys than the ones this tab pinned; still checking against the pinned keys."</p>
                });
                let plot = (r.growth.len() > 1).then(|| {
                    let pts = plot_points(&r.growth, 300.0, 60.0);
                    view! {
                        <figure class="growth">
                            <svg viewBox="-2 -2 304 64" role="img" aria-label="log size over time" preserveAspectRatio="none">
                                <polyline points=pts fill="none" stroke="currentColor" stroke-width="2" />
                            </svg>
                            <figcaption class="muted">{format!("log growth: {} → {} entries", r.growth[0].1, r.growth[r.growth.len() - 1].1)}</figcaption>
                        </figure>
                    }
                });
                let rows = if r.receipts.is_empty() {
                    view! { <p class="muted">"No receipts yet: they appear when circle members do work for you."</p> }.into_any()
                } else {
                    let included = r.receipts.iter().filter(|x| x.included).count();
                    let witnessed = r.receipts.iter().filter(|x| x.witnessed).count();
                    view! {
                        <p data-testid="receipts-summary">{format!("{} receipts · {included} included · {witnessed} witnessed", r.receipts.len())}</p>
                        <ul class="receipt-list">
                            {r.receipts.iter().map(|x| view! {
                                <li class="receipt" data-included=x.included.to_string() data-witnessed=x.witnessed.to_string()>
                                    <span class=if x.included { "ok" } else { "bad" }>{if x.included { "✓ included" } else { "✗ not in log" }}</span>
                                    <span class=if x.witnessed { "ok" } else { "bad" }>{if x.witnessed { "✓ witnessed" } else { "✗ witnessed" }}</span>
                                    <code>{format!("job {} · shard {} · worker {} · {} ms{}", x.job, x.shard, x.worker, x.ms, x.index.map(|i| format!(" · #{i}")).unwrap_or_default())}</code>
                                </li>
                            }).collect::<Vec<_>>()}
                        </ul>
                    }.into_any()
                };
                view! { {summary} {changed} {plot} {rows} }
            })}
        </div>
    }
}
