//! Human sizes as operators type them: `4096`, `128k`, `10G`, `1.5T` (binary units).

/// Parses a size like `10G` (binary multiples: k/K = 1024, M, G, T, P; optional trailing `B`/`iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let without_b = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (number, shift) = match without_b.chars().last() {
        Some('k') => (&without_b[..without_b.len() - 1], 10),
        Some('m') => (&without_b[..without_b.len() - 1], 20),
        Some('g') => (&without_b[..without_b.len() - 1], 30),
        Some('t') => (&without_b[..without_b.len() - 1], 40),
        Some('p') => (&without_b[..without_b.len() - 1], 50),
        _ => (without_b, 0),
    };
    let invalid =
        || format!("invalid size {trimmed:?}: expected a number with an optional k/M/G/T/P suffix");
    if number.is_empty() {
        return Err(invalid());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_shl(shift)
            .filter(|v| v >> shift == whole)
            .ok_or_else(invalid);
    }
    let fractional: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = fractional * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

/// Formats bytes with the largest binary unit that keeps the value >= 1 (`128K`, `10G`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1u64 << shift {
            let value = bytes as f64 / (1u64 << shift) as f64;
            return if bytes.is_multiple_of(1u64 << shift) {
                format!("{}{unit}", bytes >> shift)
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("128k"), Ok(128 << 10));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999P").is_err());
        assert_eq!(format_size(128 << 10), "128K");
        assert_eq!(format_size(3 << 29), "1.5G");
    }
}
