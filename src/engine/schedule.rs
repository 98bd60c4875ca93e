//! Cron schedules of jobs: parsing (five fields, or six with a leading
//! seconds field, or an `@hourly`-style shortcut), the next run after an
//! instant in a time zone, and which scheduled times are due after a
//! pause. Pure: no clock of its own, every instant is passed in.
//!
//! Semantics are Vixie cron's, which users know from crontab(5):
//! - day of month and day of week both restricted: either may match;
//! - a daylight-saving gap (spring forward) runs a job scheduled at a
//!   fixed hour inside it once, when the gap ends; jobs whose hour field is
//!   `*` simply have no runs in the hour that does not exist;
//! - a repeated hour (fall back) runs fixed-hour jobs once (the first
//!   time), jobs whose hour field is `*` in both.

use std::fmt;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// Scheduled times searched at most this far ahead (a schedule that never
/// runs within it is refused: `0 0 30 2 *`).
const HORIZON_YEARS: i32 = 5;
/// Due times enumerated at most per call (a two-second schedule after a
/// day of downtime): beyond it only the count is kept.
const MAX_ENUMERATED: usize = 10_000;

/// A parsed schedule in a time zone.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    tz: Tz,
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
    hour_wildcard: bool,
    has_seconds: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.text, self.tz.name())
    }
}

/// Why a schedule or time zone is refused: what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Expression(String),
    #[error("{0:?} is not a time zone: use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"")]
    TimeZone(String),
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

const FORMAT_HINT: &str = "Write five fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK` (e.g. `30 3 * * *` for 03:30 every day), six with a leading seconds field (`*/10 * * * * *`), or one of @yearly, @monthly, @weekly, @daily, @hourly";

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(self.min + i as u32);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!(
                "{s:?} in the {} field is not a number{}",
                self.name,
                if self.names.is_empty() {
                    String::new()
                } else {
                    format!(" or a name ({})", self.names.join(", "))
                }
            )
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{v} is out of range for the {} field ({}-{})",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The set of values as bits; whether it was `*` (or `?`).
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        let mut star = false;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().map_err(|_| {
                        format!("step {s:?} in the {} field is not a number", self.name)
                    })?;
                    if step == 0 {
                        return Err(format!(
                            "a step of 0 in the {} field never advances",
                            self.name
                        ));
                    }
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                if step.is_none() && text.split(',').count() == 1 {
                    star = true;
                }
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "range {range:?} in the {} field goes backwards",
                        self.name
                    ));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(format!("an empty item in the {} field", self.name));
            } else {
                let a = self.value(range)?;
                // `5/15`: from 5 to the end, every 15.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, star))
    }
}

impl Schedule {
    /// Parses `expr` in time zone `tz` (an IANA name; "" means UTC).
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let zone: Tz = if tz.is_empty() {
            Tz::UTC
        } else {
            tz.parse()
                .map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?
        };
        let text = expr.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            s if s.starts_with('@') => {
                return Err(ScheduleError::Expression(format!(
                    "{text:?} is not a shortcut Berth knows. {FORMAT_HINT}."
                )))
            }
            _ => text.to_owned(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (has_seconds, rest) = match fields.len() {
            5 => (false, &fields[..]),
            6 => (true, &fields[1..]),
            n => {
                return Err(ScheduleError::Expression(format!(
                    "{text:?} has {n} field{}. {FORMAT_HINT}.",
                    if n == 1 { "" } else { "s" }
                )))
            }
        };
        let bad = |e: String| ScheduleError::Expression(format!("{text:?}: {e}. {FORMAT_HINT}."));
        let seconds = if has_seconds {
            SECOND.parse(fields[0]).map_err(bad)?.0
        } else {
            1
        };
        let (minutes, _) = MINUTE.parse(rest[0]).map_err(bad)?;
        let (hours, hour_wildcard) = HOUR.parse(rest[1]).map_err(bad)?;
        let (days, days_star) = DAY.parse(rest[2]).map_err(bad)?;
        let (months, _) = MONTH.parse(rest[3]).map_err(bad)?;
        let (mut weekdays, weekdays_star) = WEEKDAY.parse(rest[4]).map_err(bad)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        let schedule = Schedule {
            text: text.to_owned(),
            tz: zone,
            seconds,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted: !days_star,
            weekdays_restricted: !weekdays_star,
            hour_wildcard,
            has_seconds,
        };
        // `0 0 31 2 *` parses but never runs.
        let probe = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
        if probe.and_then(|t| schedule.next_after(t)).is_none() {
            return Err(ScheduleError::Expression(format!(
                "{text:?} never runs (no such date within {HORIZON_YEARS} years): check the day of month and the month"
            )));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first scheduled instant strictly after `t`; `None` when there is
    /// none within a few years.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.with_timezone(&self.tz).naive_local();
        let ahead = self.search(start, t);
        let offset = |at: DateTime<Utc>| at.with_timezone(&self.tz).offset().fix();
        let fold_ahead = offset(t + chrono::Duration::hours(3)) != offset(t);
        if !self.hour_wildcard || !fold_ahead {
            return ahead;
        }
        // In a repeated hour, local times before `t`'s come again later:
        // search from a little before too, and take the earlier.
        let again = self.search(start - chrono::Duration::hours(3), t);
        match (ahead, again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first local time from `start` on whose instant is after `t`.
    fn search(&self, start: NaiveDateTime, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut n = truncate_second(start) + chrono::Duration::seconds(1);
        let horizon = start.year() + HORIZON_YEARS;
        while n.year() <= horizon {
            if self.months & (1 << n.month()) == 0 {
                n = next_month(n)?;
                continue;
            }
            if !self.day_matches(n.date()) {
                n = n.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hours & (1 << n.hour()) == 0 {
                n = truncate_hour(n) + chrono::Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << n.minute()) == 0 {
                n = truncate_minute(n) + chrono::Duration::minutes(1);
                continue;
            }
            if self.seconds & (1 << n.second()) == 0 {
                n += chrono::Duration::seconds(1);
                continue;
            }
            if let Some(at) = self.instant(n, t) {
                return Some(at);
            }
            n += chrono::Duration::seconds(1);
        }
        None
    }

    /// The instant of local time `n`, if it counts as a run after `after`.
    fn instant(&self, n: NaiveDateTime, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&n) {
            LocalResult::Single(at) => Some(at.with_timezone(&Utc)).filter(|at| *at > after),
            LocalResult::Ambiguous(first, second) => {
                let (first, second) = (first.with_timezone(&Utc), second.with_timezone(&Utc));
                if first > after {
                    Some(first)
                } else if self.hour_wildcard && second > after {
                    Some(second)
                } else {
                    None
                }
            }
            LocalResult::None => {
                if self.hour_wildcard {
                    return None;
                }
                // In a gap: run once, when the gap ends.
                let mut m = truncate_minute(n);
                for _ in 0..(26 * 60) {
                    m += chrono::Duration::minutes(1);
                    if let Some(at) = self.tz.from_local_datetime(&m).earliest() {
                        let at = at.with_timezone(&Utc);
                        return Some(at).filter(|at| *at > after);
                    }
                }
                None
            }
        }
    }

    /// The next `n` scheduled instants after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Why this schedule is probably not what was meant (it runs every
    /// second or every minute), if it is.
    pub fn surprise(&self) -> Option<&'static str> {
        if self.has_seconds && self.seconds == u64::MAX >> 4 {
            Some("runs every second")
        } else if self.minutes == u64::MAX >> 4 && self.seconds.count_ones() == 1 {
            if self.hour_wildcard {
                Some("runs every minute")
            } else {
                Some("runs every minute of the hours it names (write a minute, e.g. `0`, to run once an hour)")
            }
        } else {
            None
        }
    }

    /// Which scheduled times in `(after, now]` are due: the latest runs if
    /// it is at most `deadline` old (late, once); every other one is
    /// missed. A burst of late runs never happens.
    pub fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>, deadline: Duration) -> Due {
        let mut due = Due::default();
        let mut at = after;
        let mut last = None;
        while let Some(next) = self.next_after(at) {
            if next > now {
                break;
            }
            if let Some(prev) = last.replace(next) {
                due.missed_total += 1;
                if due.missed.len() < MAX_MISSED_LISTED {
                    due.missed.push(prev);
                }
            }
            at = next;
            if (due.missed_total as usize) >= MAX_ENUMERATED {
                // Far behind: skip ahead to the deadline window.
                let jump = now - chrono::Duration::from_std(deadline).unwrap_or_default();
                if jump > at {
                    at = jump - chrono::Duration::seconds(1);
                    due.missed_total += 1; // at least one more was skipped
                }
            }
        }
        if let Some(latest) = last {
            let late = (now - latest).to_std().unwrap_or_default();
            if late <= deadline {
                due.run = Some(latest);
            } else {
                due.missed_total += 1;
                if due.missed.len() < MAX_MISSED_LISTED {
                    due.missed.push(latest);
                }
            }
        }
        due
    }
}

/// Missed times listed (recorded one by one) at most per call.
pub const MAX_MISSED_LISTED: usize = 100;

/// What [`Schedule::due`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Due {
    /// The scheduled time to run now (maybe late), if any.
    pub run: Option<DateTime<Utc>>,
    /// Scheduled times that were missed, oldest first (at most
    /// [`MAX_MISSED_LISTED`]).
    pub missed: Vec<DateTime<Utc>>,
    /// How many were missed in all.
    pub missed_total: u64,
}

fn truncate_second(n: NaiveDateTime) -> NaiveDateTime {
    n.with_nanosecond(0).unwrap_or(n)
}

fn truncate_minute(n: NaiveDateTime) -> NaiveDateTime {
    truncate_second(n).with_second(0).unwrap_or(n)
}

fn truncate_hour(n: NaiveDateTime) -> NaiveDateTime {
    truncate_minute(n).with_minute(0).unwrap_or(n)
}

fn next_month(n: NaiveDateTime) -> Option<NaiveDateTime> {
    let (y, m) = if n.month() == 12 {
        (n.year() + 1, 1)
    } else {
        (n.year(), n.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        Schedule::parse(expr, tz)
            .unwrap()
            .next_after(utc(after))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    }

    #[test]
    fn five_and_six_fields_and_shortcuts() {
        assert_eq!(
            next("30 3 * * *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-01T03:30:00+00:00"
        );
        assert_eq!(
            next("30 3 * * *", "UTC", "2026-01-01T03:30:00Z"),
            "2026-01-02T03:30:00+00:00"
        );
        assert_eq!(
            next("*/2 * * * * *", "", "2026-01-01T00:00:01Z"),
            "2026-01-01T00:00:02+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T00:14:59Z"),
            "2026-01-01T00:15:00+00:00"
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-01T01:00:00+00:00"
        );
        assert_eq!(
            next("@daily", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "UTC", "2026-01-15T00:00:00Z"),
            "2026-02-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "UTC", "2026-01-15T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * JAN-MAR MON-FRI", "UTC", "2026-03-31T10:00:00Z"),
            "2027-01-01T09:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "UTC", "2026-01-01T00:26:00Z"),
            "2026-01-01T00:45:00+00:00"
        );
        // Leap day.
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * FRI", "UTC", "2026-02-01T00:00:00Z"),
            "2026-02-06T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 13 * FRI", "UTC", "2026-02-06T00:00:00Z"),
            "2026-02-13T00:00:00+00:00"
        );
    }

    #[test]
    fn time_zones_shift_the_instant() {
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-01-01T00:00:00Z"),
            "2026-01-01T08:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-07-01T00:00:00Z"),
            "2026-07-01T07:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * *", "America/New_York", "2026-01-01T00:00:00Z"),
            "2026-01-01T14:00:00+00:00"
        );
    }

    #[test]
    fn daylight_saving_gap_runs_fixed_hour_jobs_once_when_it_ends() {
        // Berlin, 2026-03-29: 02:00 local jumps to 03:00 (01:00 UTC).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z"),
            "2026-03-29T01:00:00+00:00"
        );
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let after = s.next_after(utc("2026-03-29T01:00:00Z")).unwrap();
        assert_eq!(
            after.to_rfc3339(),
            "2026-03-30T00:30:00+00:00",
            "once, not again"
        );
        // A job every 30 minutes of every hour has no runs in the gap.
        let every = Schedule::parse("*/30 * * * *", "Europe/Berlin").unwrap();
        let runs: Vec<String> = every
            .upcoming(utc("2026-03-29T00:00:00Z"), 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            runs,
            [
                "2026-03-29T00:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn repeated_hour_runs_fixed_hour_jobs_once_and_hourly_ones_in_both() {
        // Berlin, 2026-10-25: 03:00 local goes back to 02:00 (01:00 UTC).
        let fixed = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let runs: Vec<String> = fixed
            .upcoming(utc("2026-10-24T23:00:00Z"), 2)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            runs,
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        let hourly = Schedule::parse("30 * * * *", "Europe/Berlin").unwrap();
        let runs: Vec<String> = hourly
            .upcoming(utc("2026-10-25T00:00:00Z"), 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            runs,
            [
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T01:30:00+00:00",
                "2026-10-25T02:30:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        for (expr, words) in [
            ("* * * *", "has 4 fields"),
            ("61 * * * *", "out of range for the minute field"),
            ("* 24 * * *", "out of range for the hour field"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "goes backwards"),
            ("x * * * *", "not a number"),
            ("0 0 * FOO *", "or a name (JAN"),
            ("@sometimes", "not a shortcut"),
            ("0 0 31 2 *", "never runs"),
            ("1,,2 * * * *", "empty item"),
        ] {
            let err = Schedule::parse(expr, "UTC").unwrap_err().to_string();
            assert!(err.contains(words), "{expr}: {err}");
        }
        let err = Schedule::parse("@daily", "Mars/Olympus").unwrap_err();
        assert!(matches!(err, ScheduleError::TimeZone(_)), "{err}");
        assert!(err.to_string().contains("Europe/Berlin"));
    }

    #[test]
    fn surprises_are_named() {
        let s = |e| Schedule::parse(e, "UTC").unwrap().surprise();
        assert_eq!(s("* * * * *"), Some("runs every minute"));
        assert!(s("* 3 * * *").unwrap().contains("of the hours it names"));
        assert_eq!(s("* * * * * *"), Some("runs every second"));
        assert_eq!(s("0 3 * * *"), None);
        assert_eq!(s("*/2 * * * * *"), None);
        assert_eq!(s("*/5 * * * *"), None);
    }

    #[test]
    fn after_downtime_the_latest_runs_late_once_and_older_ones_are_missed() {
        let s = Schedule::parse("*/10 * * * *", "UTC").unwrap();
        let minute = Duration::from_secs(60);
        // Down from 00:00 to 00:35: 00:10, 00:20, 00:30 are due; 00:30 is
        // 5 minutes late, past a 60 s deadline: all three missed.
        let d = s.due(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T00:35:00Z"),
            minute,
        );
        assert_eq!(d.run, None);
        assert_eq!(d.missed_total, 3);
        assert_eq!(d.missed.len(), 3);
        // Back at 00:30:40: 00:30 runs (40 s late), the two before are missed.
        let d = s.due(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T00:30:40Z"),
            minute,
        );
        assert_eq!(d.run, Some(utc("2026-01-01T00:30:00Z")));
        assert_eq!(
            d.missed,
            [utc("2026-01-01T00:10:00Z"), utc("2026-01-01T00:20:00Z")]
        );
        // On time: exactly one run, nothing missed; nothing twice.
        let d = s.due(
            utc("2026-01-01T00:29:59Z"),
            utc("2026-01-01T00:30:00Z"),
            minute,
        );
        assert_eq!(
            (d.run, d.missed_total),
            (Some(utc("2026-01-01T00:30:00Z")), 0)
        );
        let d = s.due(
            utc("2026-01-01T00:30:00Z"),
            utc("2026-01-01T00:30:01Z"),
            minute,
        );
        assert_eq!(d, Due::default());
    }

    #[test]
    fn a_day_of_downtime_of_a_two_second_job_is_bounded() {
        let s = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        let d = s.due(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-02T00:00:01Z"),
            Duration::from_secs(60),
        );
        assert_eq!(d.run, Some(utc("2026-01-02T00:00:00Z")));
        assert_eq!(d.missed.len(), MAX_MISSED_LISTED);
        assert!(
            d.missed_total >= MAX_ENUMERATED as u64,
            "{}",
            d.missed_total
        );
    }
}
