//! Civil dates in UTC with no date crate: the arithmetic behind IMAP's INTERNALDATE and SEARCH
//! dates and the RFC 5322 dates of trace headers (the store keeps Unix seconds).

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A month's number (1 to 12) from its English abbreviation, any case.
pub fn month_number(name: &str) -> Option<u32> {
    MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name)).map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day (since the epoch, UTC) a timestamp falls on.
pub fn day_of(timestamp: i64) -> i64 {
    timestamp.div_euclid(86_400)
}

/// An INTERNALDATE string: `"17-Jul-1996 02:44:25 +0000"` without the quotes.
pub fn internal_date(timestamp: i64) -> String {
    let (year, month, day) = civil_from_days(day_of(timestamp));
    let secs = timestamp.rem_euclid(86_400);
    let month = MONTHS[(month as usize).saturating_sub(1).min(11)];
    format!("{day:02}-{month}-{year:04} {:02}:{:02}:{:02} +0000", secs / 3600, secs / 60 % 60, secs % 60)
}

/// An RFC 5322 date in UTC, e.g. `Tue, 24 Nov 2026 13:05:09 +0000`.
pub fn rfc5322_date(timestamp: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = day_of(timestamp);
    let (year, month, day) = civil_from_days(days);
    let secs = timestamp.rem_euclid(86_400);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(month as usize).saturating_sub(1).min(11)];
    format!("{weekday}, {day} {month} {year} {:02}:{:02}:{:02} +0000", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_format() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(internal_date(837_571_465), "17-Jul-1996 02:44:25 +0000");
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_611_909), "Wed, 25 Nov 2026 13:05:09 +0000");
    }
}
