//! Human-readable sizes, one way everywhere: decimal units (1 GB = 10^9 bytes),
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

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_units() {
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(1_500), "1.5 kB");
        assert_eq!(super::bytes(538_000_000), "538.0 MB");
        assert_eq!(super::bytes(4_500_000_000), "4.50 GB");
    }
}
