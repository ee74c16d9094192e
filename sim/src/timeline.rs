//! An HTML timeline of one run, drawn from its trace: a lane per node, frames as arrows from
//! sender to receiver, faults marked. Hovering an element shows its trace line.

use std::fmt::Write;

/// Pixels per simulated millisecond.
const PX_PER_MS: f64 = 0.25;
const LANE_PX: f64 = 60.0;
const LEFT_PX: f64 = 110.0;
/// Arrows beyond this many are left out (the file stays openable); the page says so.
const MAX_ARROWS: usize = 30_000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

fn time(line: &str) -> Option<u64> {
    field(line, "t=")?.parse().ok()
}

/// The node number after a word: "broker 3 crash" → 3.
fn node_after(line: &str, word: &str) -> Option<usize> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == word)?;
    words.next()?.parse().ok()
}

/// Whether `line` is about message `body` (as a whole word: "p0-1" is not "p0-10").
fn mentions(line: &str, body: &str) -> bool {
    line.split_whitespace().any(|w| w == body)
}

/// Renders the timeline of a trace; `nodes` names the lanes. `culprit`: the message that broke
/// an invariant, and what broke (every event of that message is marked, the first one is
/// where "jump to it" goes).
pub fn render(
    title: &str,
    nodes: &[String],
    trace: &[String],
    culprit: Option<(&str, &str)>,
) -> String {
    let end = trace.iter().filter_map(|l| time(l)).max().unwrap_or(0);
    let width = LEFT_PX + end as f64 * PX_PER_MS + 40.0;
    let height = 40.0 + nodes.len() as f64 * LANE_PX;
    let x = |t: u64| LEFT_PX + t as f64 * PX_PER_MS;
    let y = |n: usize| 30.0 + n as f64 * LANE_PX + LANE_PX / 2.0;
    let mut svg = String::new();
    for (n, name) in nodes.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT_PX}" y1="{0}" x2="{width}" y2="{0}" stroke="#ddd"/><text x="6" y="{1}" class="lane">{2}</text>"##,
            y(n),
            y(n) + 4.0,
            esc(name)
        );
    }
    let mut s = 0;
    while s * 1000 <= end {
        let t = s * 1000;
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="20" x2="{0}" y2="{height}" stroke="#f2f2f2"/><text x="{0}" y="14" class="tick">{s}s</text>"##,
            x(t)
        );
        s += 5;
    }
    let mut arrows = 0usize;
    let mut left_out = 0usize;
    let mut first_culprit = true;
    for line in trace {
        let Some(t) = time(line) else { continue };
        let tip = format!("<title>{}</title>", esc(line));
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some((body, _)) = culprit
            && mentions(line, body)
        {
            // Every event of the culprit message: a tall orange band across all lanes.
            let id = if std::mem::take(&mut first_culprit) {
                r#" id="culprit""#
            } else {
                ""
            };
            let _ = write!(
                svg,
                r##"<rect{id} x="{}" y="20" width="3" height="{}" class="culprit">{tip}</rect>"##,
                x(t) - 1.5,
                height - 20.0
            );
        }
        match words.get(1).copied() {
            Some("sent") => {
                // An acknowledgement (or a failure) reaching its producer.
                let Some(n) = node_after(line, "by").filter(|n| *n < nodes.len()) else {
                    continue;
                };
                let class = if line.contains("Some(SendOk)") {
                    "ack"
                } else {
                    "nack"
                };
                let (cx, cy) = (x(t), y(n) + 8.0);
                let _ = write!(
                    svg,
                    r##"<path d="M{} {} l4 6 l-8 0 z" class="{class}">{tip}</path>"##,
                    cx,
                    cy - 3.0
                );
            }
            Some("flushed") | Some("flush") => {
                let Some(n) = words
                    .get(if words[1] == "flush" { 3 } else { 2 })
                    .and_then(|w| w.parse::<usize>().ok())
                    .filter(|n| *n < nodes.len())
                else {
                    continue;
                };
                let class = if words[1] == "flush" {
                    "fault"
                } else {
                    "flush"
                };
                let _ = write!(
                    svg,
                    r##"<rect x="{}" y="{}" width="2" height="8" class="{class}">{tip}</rect>"##,
                    x(t) - 1.0,
                    y(n) + 10.0
                );
            }
            Some("frame") | Some("drop") => {
                let Some((a, b)) = words
                    .get(2)
                    .and_then(|w| w.split_once("->"))
                    .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                else {
                    continue;
                };
                if a >= nodes.len() || b >= nodes.len() {
                    continue;
                }
                if words[1] == "drop" {
                    let _ = write!(
                        svg,
                        r##"<text x="{}" y="{}" class="drop">✕{tip}</text>"##,
                        x(t) - 4.0,
                        y(a) + 4.0
                    );
                    continue;
                }
                if arrows >= MAX_ARROWS {
                    left_out += 1;
                    continue;
                }
                arrows += 1;
                let sent = field(line, "sent=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(t);
                let class = if field(line, "resp=") == Some("true") {
                    "resp"
                } else {
                    "req"
                };
                let _ = write!(
                    svg,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" class="{class}" marker-end="url(#a)">{tip}</line>"##,
                    x(sent),
                    y(a),
                    x(t),
                    y(b)
                );
            }
            Some("deliver") => {
                let Some(n) = words
                    .get(2)
                    .and_then(|w| w.strip_prefix('c'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n < nodes.len())
                else {
                    continue;
                };
                let _ = write!(
                    svg,
                    r##"<circle cx="{}" cy="{}" r="2.5" class="deliver">{tip}</circle>"##,
                    x(t),
                    y(n) - 8.0
                );
            }
            Some("broker") | Some("name") | Some("fault") | Some("recover") | Some("operator") => {
                // "fault <kind> <node> ..." and "recover <kind> <node> ...".
                let kind_node = words
                    .get(3)
                    .filter(|_| matches!(words.get(1), Some(&"fault") | Some(&"recover")))
                    .and_then(|w| w.parse::<usize>().ok());
                let node = kind_node
                    .or_else(|| node_after(line, "broker"))
                    .or_else(|| node_after(line, "server"))
                    .filter(|n| *n < nodes.len());
                let Some(n) = node else { continue };
                let class = if line.contains(" up") || words.get(1) == Some(&"recover") {
                    "up"
                } else {
                    "fault"
                };
                let _ = write!(
                    svg,
                    r##"<rect x="{}" y="{}" width="6" height="{}" class="{class}">{tip}</rect>"##,
                    x(t) - 3.0,
                    y(n) - LANE_PX / 2.0 + 4.0,
                    LANE_PX - 8.0
                );
            }
            Some("liveness") => {
                let _ = write!(
                    svg,
                    r##"<line x1="{0}" y1="20" x2="{0}" y2="{height}" class="phase">{tip}</line><text x="{1}" y="28" class="tick">liveness</text>"##,
                    x(t),
                    x(t) + 4.0
                );
            }
            _ => {}
        }
    }
    let note = if left_out > 0 {
        format!(
            "<p>{left_out} frames after the first {MAX_ARROWS} are not drawn; the trace has them all.</p>"
        )
    } else {
        String::new()
    };
    let heading = match culprit {
        Some((body, what)) => format!(
            r#"<p class="broke">Broken: {} — message <b>{}</b> is marked by orange bands. <button onclick="document.getElementById('culprit').scrollIntoView({{inline:'center',block:'nearest'}})">jump to it</button></p>"#,
            esc(what),
            esc(body)
        ),
        None => String::new(),
    };
    format!(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font: 13px sans-serif; margin: 12px; }}
.lane {{ font-weight: bold; }} .tick {{ fill: #888; font-size: 11px; }}
.req {{ stroke: #3b6fd4; stroke-width: 1; }} .resp {{ stroke: #9aa; stroke-width: 1; }}
.drop {{ fill: #d33; font-size: 12px; }} .deliver {{ fill: #8a3ad4; }}
.fault {{ fill: #d33; opacity: .8; }} .up {{ fill: #2a2; opacity: .8; }}
.phase {{ stroke: #2a2; stroke-dasharray: 4 3; }}
.ack {{ fill: #2a2; }} .nack {{ fill: #e80; }} .flush {{ fill: #888; }}
.culprit {{ fill: #f90; opacity: .55; }} .broke {{ color: #b50; }}
</style></head><body>
<h3>{t}</h3>
{heading}<p>Lanes are nodes; blue arrows requests, grey responses; red ✕ a dropped frame; red bars faults (crashes, power losses, partitions, clogs, pauses, consumers leaving, name servers down, failed flushes); green bars recoveries; purple dots deliveries to the application; green triangles acknowledged sends (orange: failed); grey ticks flushes. Hover for the trace line.
<label>zoom <input type="range" id="zoom" min="-5" max="4" step="0.25" value="0"></label></p>
{note}<div style="overflow-x: scroll"><svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" preserveAspectRatio="none">
<defs><marker id="a" markerWidth="6" markerHeight="6" refX="5" refY="3" orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="#666"/></marker></defs>
{svg}
</svg></div>
<script>
// Zoom stretches time (the horizontal axis) by powers of two; lanes keep their height.
const svg = document.getElementById('timeline');
const base = svg.width.baseVal.value;
document.getElementById('zoom').oninput = e => {{
  svg.setAttribute('width', base * Math.pow(2, +e.target.value));
}};
</script></body></html>
"##,
        t = esc(title)
    )
}
