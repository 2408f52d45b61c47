//! Progress of the long one-shot commands (`replay`, `verify`, `media-gc`,
//! `import-leads`), always on stderr so stdout keeps only the result:
//!
//! - on a terminal, a bar with rate and ETA (`indicatif`);
//! - when stderr is not a terminal (a pipe, a CI log, `kubectl logs`), one plain
//!   line every `PROGRESS_INTERVAL_MS`, and a last line when done, since a bar's
//!   carriage returns turn a log file into one unreadable line;
//! - with `LOG_FORMAT=json`, the same lines as JSON objects, for log pipelines.

use crate::config::{Config, LogFormat};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What is counted: shapes how amounts, rates and the bar are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Events,
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Events => "events",
            Unit::Bytes => "bytes",
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Json,
}

impl Mode {
    /// The mode for this process: JSON if asked for, a bar on a terminal,
    /// plain lines otherwise.
    pub fn detect(config: &Config) -> Self {
        if config.log_format == LogFormat::Json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    label: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Option<Instant>,
    interval: Duration,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress of `label` (e.g. `replay campaigns`) out of `total` units, if known.
    pub fn new(config: &Config, label: impl Into<String>, unit: Unit, total: Option<u64>) -> Self {
        let mode = Mode::detect(config);
        let label = label.into();
        let bar = (mode == Mode::Bar).then(|| bar(&label, unit, total));
        Self {
            mode,
            label,
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last_line: None,
            interval: Duration::from_millis(config.progress_interval_ms),
            bar,
        }
    }

    /// The total became known (or changed) after the start.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// `done` units so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let due = self.last_line.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            self.last_line = Some(Instant::now());
            self.line(false);
        }
    }

    pub fn add(&mut self, units: u64) {
        self.set(self.done.saturating_add(units));
    }

    /// The work is over: the bar is cleared (the command prints its result),
    /// the line modes print a last line.
    pub fn finish(&mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => self.line(true),
        }
    }

    fn line(&self, finished: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = rate(self.done, elapsed);
        let eta = self
            .total
            .filter(|_| rate > 0.0 && !finished)
            .map(|total| total.saturating_sub(self.done) as f64 / rate);
        let text = match self.mode {
            Mode::Json => serde_json::json!({
                "progress": self.label,
                "unit": self.unit.name(),
                "done": self.done,
                "total": self.total,
                "rate_per_second": rate.round(),
                "elapsed_seconds": (elapsed * 10.0).round() / 10.0,
                "eta_seconds": eta.map(f64::ceil),
                "finished": finished,
            })
            .to_string(),
            _ => plain_line(&self.label, self.unit, self.done, self.total, rate, eta, finished),
        };
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A command that fails midway leaves no half-drawn bar behind.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn rate(done: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    }
}

fn bar(label: &str, unit: Unit, total: Option<u64>) -> ProgressBar {
    let template = match unit {
        Unit::Events => {
            "{prefix} {wide_bar} {human_pos}/{human_len} events  {per_sec}  ETA {eta}  [{elapsed}]"
        }
        Unit::Bytes => {
            "{prefix} {wide_bar} {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}  [{elapsed}]"
        }
    };
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the templates above are valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// `replay campaigns: 120000/1000000 events (12%), 45000 events/s, ETA 20s`.
fn plain_line(
    label: &str,
    unit: Unit,
    done: u64,
    total: Option<u64>,
    rate: f64,
    eta: Option<f64>,
    finished: bool,
) -> String {
    let amount = |n: u64| match unit {
        Unit::Events => n.to_string(),
        Unit::Bytes => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    };
    let unit_name = match unit {
        Unit::Events => " events",
        Unit::Bytes => "",
    };
    let mut line = format!("{label}: {}", amount(done));
    if let Some(total) = total {
        line.push_str(&format!("/{}", amount(total)));
    }
    line.push_str(unit_name);
    if let Some(total) = total.filter(|t| *t > 0) {
        line.push_str(&format!(" ({:.0}%)", 100.0 * done as f64 / total as f64));
    }
    match unit {
        Unit::Events => line.push_str(&format!(", {rate:.0} events/s")),
        Unit::Bytes => line.push_str(&format!(", {:.1} MiB/s", rate / (1024.0 * 1024.0))),
    }
    if finished {
        line.push_str(", done");
    } else if let Some(eta) = eta {
        line.push_str(&format!(", ETA {:.0}s", eta.ceil()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_amount_share_rate_and_eta() {
        let line = plain_line(
            "replay campaigns",
            Unit::Events,
            120_000,
            Some(1_000_000),
            45_000.0,
            Some(19.6),
            false,
        );
        assert_eq!(
            line,
            "replay campaigns: 120000/1000000 events (12%), 45000 events/s, ETA 20s"
        );
        let done = plain_line(
            "import-leads",
            Unit::Bytes,
            3 << 20,
            Some(3 << 20),
            1048576.0,
            None,
            true,
        );
        assert_eq!(done, "import-leads: 3.0 MiB/3.0 MiB (100%), 1.0 MiB/s, done");
    }
}
