//! Human-readable sizes and counts, one way everywhere: decimal units (1 GB = 10^9 bytes),
//! as Finder and the Hugging Face Hub show file sizes.

/// "1.23 GB", "456.7 MB", "12.3 kB", "999 B".
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

/// "12,345": a count with thousands separated.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_with_thousands_separated() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(999), "999");
        assert_eq!(super::count(1_000), "1,000");
        assert_eq!(super::count(8_192), "8,192");
        assert_eq!(super::count(1_234_567), "1,234,567");
    }


    #[test]
    fn decimal_units() {
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(1_500), "1.5 kB");
        assert_eq!(super::bytes(538_000_000), "538.0 MB");
        assert_eq!(super::bytes(4_500_000_000), "4.50 GB");
    }
}
