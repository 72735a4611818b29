//! Charts drawn on the server as SVG: a stacked bar per day, a legend, and the same figures as a
//! table (for screen readers, for copying, and for anyone who reads numbers rather than bars).
//! No script and no inline style: colours are SVG presentation attributes, which the panel's
//! Content-Security-Policy allows.

use chrono::NaiveDate;
use maud::{Markup, html};

use super::layout::{self, Lang};

/// One stacked part of every bar.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// One value per day, in the chart's day order.
    pub values: Vec<u64>,
}

/// Colours with enough contrast on white, told apart by more than hue alone thanks to the
/// table and the order of the legend.
const PALETTE: [&str; 8] = [
    "#0b5cad", "#1d7a3a", "#9a6700", "#b3261e", "#6b3fa0", "#00838f", "#5a6470", "#c2185b",
];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// The smallest 1, 2 or 5 × 10ⁿ at or above `n` (at least 1): the top of the axis.
fn nice_max(n: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= n.max(1) {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// One day's bar: where it stands, its stacked parts, and its label under the axis.
struct Bar {
    x: f64,
    parts: Vec<Part>,
    label: Option<String>,
}

struct Part {
    y: f64,
    height: f64,
    fill: &'static str,
    title: String,
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A stacked bar chart of `series` over `days`, with its legend and data table. `id` makes the
/// chart's element ids unique on the page.
pub fn stacked_bars(
    lang: Lang,
    id: &str,
    title: &str,
    days: &[NaiveDate],
    series: &[Series],
) -> Markup {
    let totals: Vec<u64> = (0..days.len())
        .map(|d| {
            series
                .iter()
                .map(|s| s.values.get(d).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let top = nice_max(totals.iter().copied().max().unwrap_or(0));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    let bar = (slot * 0.75).max(1.0);
    let y = |v: u64| TOP + plot_h - plot_h * v as f64 / top as f64;
    let bars: Vec<Bar> = days
        .iter()
        .enumerate()
        .map(|(d, day)| {
            let mut base = 0;
            let mut parts = Vec::new();
            for (i, s) in series.iter().enumerate() {
                let v = s.values.get(d).copied().unwrap_or(0);
                if v > 0 {
                    parts.push(Part {
                        y: y(base + v),
                        height: y(base) - y(base + v),
                        fill: colour(i),
                        title: format!("{} {}: {v}", day.format("%d.%m"), s.label),
                    });
                }
                base += v;
            }
            Bar {
                x: LEFT + slot * d as f64 + (slot - bar) / 2.0,
                parts,
                // Every fifth day is labelled, counting back from the last.
                label: (d % 5 == days.len().saturating_sub(1) % 5)
                    .then(|| day.format("%d.%m").to_string()),
            }
        })
        .collect();
    let title_id = format!("{id}-title");
    let empty = totals.iter().all(|t| *t == 0);
    html! {
        figure.chart id=(id) {
            figcaption id=(title_id) { (title) }
            svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
                role="img" aria-labelledby=(title_id) xmlns="http://www.w3.org/2000/svg" {
                @for tick in [0, top / 2, top] {
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(tick)) y2=(y(tick)) stroke="#d5dae0" {}
                    text x=(LEFT - 6.0) y=(y(tick) + 4.0) text-anchor="end" font-size="11" fill="#5a6470" { (tick) }
                }
                @for b in &bars {
                    @for part in &b.parts {
                        rect x=(format!("{:.1}", b.x)) y=(format!("{:.1}", part.y)) width=(format!("{bar:.1}"))
                            height=(format!("{:.1}", part.height)) fill=(part.fill) {
                            title { (part.title) }
                        }
                    }
                    @if let Some(label) = &b.label {
                        text x=(format!("{:.1}", b.x + bar / 2.0)) y=(HEIGHT - 8.0) text-anchor="middle" font-size="11" fill="#5a6470" {
                            (label)
                        }
                    }
                }
                @if empty {
                    text x=(LEFT + plot_w / 2.0) y=(TOP + plot_h / 2.0) text-anchor="middle" font-size="13" fill="#5a6470" {
                        (lang.t("bu günlerde kayıt yok", "nothing on these days"))
                    }
                }
            }
            ul.legend {
                @for (i, s) in series.iter().enumerate() {
                    li {
                        svg width="12" height="12" aria-hidden="true" xmlns="http://www.w3.org/2000/svg" {
                            rect width="12" height="12" fill=(colour(i)) {}
                        }
                        " " (s.label) " (" (layout::number(s.values.iter().sum())) ")"
                    }
                }
            }
            details {
                summary { (lang.t("Tablo olarak", "As a table")) }
                div.scroll {
                    table {
                        thead { tr {
                            th { (lang.t("Gün", "Day")) }
                            @for s in series { th.num { (s.label) } }
                        } }
                        tbody {
                            @for (d, day) in days.iter().enumerate() {
                                tr {
                                    td { (day.format("%d.%m.%Y")) }
                                    @for s in series { td.num { (s.values.get(d).copied().unwrap_or(0)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_round_number_at_or_above_the_largest_bar() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(10), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(4_321), 5_000);
    }

    #[test]
    fn bars_stack_the_series_and_the_table_holds_every_value() {
        let days: Vec<NaiveDate> = (1..=3)
            .map(|d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap())
            .collect();
        let series = [
            Series {
                label: "MESAJ HS".into(),
                values: vec![3, 0, 5],
            },
            Series {
                label: "MESAJ IYS".into(),
                values: vec![2, 0, 0],
            },
        ];
        let svg = stacked_bars(Lang::En, "c", "Approvals", &days, &series).into_string();
        // Three non-zero parts, each titled with its day, series and value.
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
        assert!(svg.contains("<title>01.12 MESAJ HS: 3</title>"));
        assert!(svg.contains("<title>01.12 MESAJ IYS: 2</title>"));
        assert!(svg.contains("<title>03.12 MESAJ HS: 5</title>"));
        // The legend totals, and the table's cells.
        assert!(svg.contains("MESAJ HS (8)"));
        assert!(
            svg.contains("<td>03.12.2026</td><td class=\"num\">5</td><td class=\"num\">0</td>")
        );
        // The first day's bar reaches the top of the axis (5 = nice_max(5)).
        assert!(svg.contains(&format!("y=\"{TOP:.1}\"")), "{svg}");
    }
}
