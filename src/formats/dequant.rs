//! ggml block formats decoded to f32 in Rust, for the tensors MLX's GGUF reader
//! cannot keep (K-quants, Q5_0/Q5_1; it rejects Q5_0 outright). The layouts
//! follow ggml's reference dequantizers (ggml-quants.c).

use half::{bf16, f16};

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes `n` elements of ggml type `ty`; None for types not handled here.
pub fn dequantize(ty: u32, data: &[u8], n: usize) -> Option<Vec<f32>> {
    let (_, block, bytes) = super::gguf_header::ggml_type_info(ty)?;
    let (block, bytes) = (block as usize, bytes as usize);
    if n % block != 0 || data.len() < n / block * bytes {
        return None;
    }
    let mut y = vec![0f32; n];
    let blocks = data.chunks_exact(bytes).take(n / block);
    match ty {
        0 => blocks.zip(y.iter_mut()).for_each(|(b, o)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        1 => blocks.zip(y.iter_mut()).for_each(|(b, o)| *o = h(b, 0)),
        30 => blocks.zip(y.iter_mut()).for_each(|(b, o)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        // Q4_0: d, 16 bytes of nibbles; low nibbles are the first 16 values.
        2 => blocks.zip(y.chunks_exact_mut(32)).for_each(|(b, o)| {
            let d = h(b, 0);
            for j in 0..16 {
                o[j] = ((b[2 + j] & 0xF) as f32 - 8.0) * d;
                o[j + 16] = ((b[2 + j] >> 4) as f32 - 8.0) * d;
            }
        }),
        // Q4_1: d, m, nibbles.
        3 => blocks.zip(y.chunks_exact_mut(32)).for_each(|(b, o)| {
            let (d, m) = (h(b, 0), h(b, 2));
            for j in 0..16 {
                o[j] = (b[4 + j] & 0xF) as f32 * d + m;
                o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }),
        // Q5_0 / Q5_1: nibbles plus a fifth bit from a 32-bit mask.
        6 | 7 => {
            let (qh_at, has_m) = if ty == 6 { (2, false) } else { (4, true) };
            blocks.zip(y.chunks_exact_mut(32)).for_each(|(b, o)| {
                let d = h(b, 0);
                let m = if has_m { h(b, 2) } else { 0.0 };
                let qh = u32::from_le_bytes([b[qh_at], b[qh_at + 1], b[qh_at + 2], b[qh_at + 3]]);
                let qs = &b[qh_at + 4..];
                let off = if has_m { 0 } else { 16 };
                for j in 0..16 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    let x0 = ((qs[j] as u32 & 0xF) | h0) as i32 - off;
                    let x1 = ((qs[j] as u32 >> 4) | h1) as i32 - off;
                    o[j] = x0 as f32 * d + m;
                    o[j + 16] = x1 as f32 * d + m;
                }
            })
        }
        // MXFP4: an E8M0 exponent, then E2M1 codes (value j low, j+16 high).
        39 => blocks.zip(y.chunks_exact_mut(32)).for_each(|(b, o)| {
            let d = e8m0(b[0]);
            for j in 0..16 {
                o[j] = E2M1[(b[1 + j] & 0xF) as usize] * d;
                o[j + 16] = E2M1[(b[1 + j] >> 4) as usize] * d;
            }
        }),
        // Q8_0: d, 32 signed bytes.
        8 => blocks.zip(y.chunks_exact_mut(32)).for_each(|(b, o)| {
            let d = h(b, 0);
            for j in 0..32 {
                o[j] = b[2 + j] as i8 as f32 * d;
            }
        }),
        // Q2_K: scales[16], qs[64], d, dmin.
        10 => blocks.zip(y.chunks_exact_mut(256)).for_each(|(b, o)| {
            let (sc, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (h(b, 80), h(b, 82));
            let (mut is, mut out) = (0, 0);
            for half in 0..2 {
                let q = &qs[half * 32..];
                for shift in [0, 2, 4, 6] {
                    for part in 0..2 {
                        let s = sc[is];
                        is += 1;
                        let (dl, ml) = (d * (s & 0xF) as f32, dmin * (s >> 4) as f32);
                        for l in 0..16 {
                            o[out] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                            out += 1;
                        }
                    }
                }
            }
        }),
        // Q3_K: hmask[32], qs[64], scales[12] (6-bit, packed), d.
        11 => blocks.zip(y.chunks_exact_mut(256)).for_each(|(b, o)| {
            let (hm, qs, raw) = (&b[0..32], &b[32..96], &b[96..108]);
            let d = h(b, 108);
            let mut aux = [0u32; 4];
            for i in 0..3 {
                aux[i] = u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
            }
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            let scales: Vec<i8> = aux.iter().flat_map(|a| a.to_le_bytes()).map(|x| x as i8).collect();
            let (mut is, mut out, mut m) = (0, 0, 1u8);
            for half in 0..2 {
                let q = &qs[half * 32..];
                for shift in [0, 2, 4, 6] {
                    for part in 0..2 {
                        let dl = d * (scales[is] as f32 - 32.0);
                        is += 1;
                        for l in 0..16 {
                            let i = l + 16 * part;
                            let hi = if hm[i] & m != 0 { 0 } else { 4 };
                            o[out] = dl * (((q[i] >> shift) & 3) as i32 - hi) as f32;
                            out += 1;
                        }
                    }
                    m <<= 1;
                }
            }
        }),
        // Q4_K / Q5_K: d, dmin, 12 bytes of 6-bit scales and mins, (qh[32]), qs[128].
        12 | 13 => blocks.zip(y.chunks_exact_mut(256)).for_each(|(b, o)| {
            let (d, dmin) = (h(b, 0), h(b, 2));
            let sc = &b[4..16];
            let (qh, qs) = if ty == 13 { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            let scale_min = |j: usize| -> (f32, f32) {
                let (s, m) = if j < 4 {
                    (sc[j] & 63, sc[j + 4] & 63)
                } else {
                    ((sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
                };
                (d * s as f32, dmin * m as f32)
            };
            let (mut u1, mut u2) = (1u8, 2u8);
            for (g, j) in (0..256).step_by(64).enumerate() {
                let q = &qs[g * 32..g * 32 + 32];
                let (d1, m1) = scale_min(2 * g);
                let (d2, m2) = scale_min(2 * g + 1);
                for l in 0..32 {
                    let hb = |u: u8| qh.map_or(0.0, |qh| if qh[l] & u != 0 { 16.0 } else { 0.0 });
                    o[j + l] = d1 * ((q[l] & 0xF) as f32 + hb(u1)) - m1;
                    o[j + 32 + l] = d2 * ((q[l] >> 4) as f32 + hb(u2)) - m2;
                }
                u1 <<= 2;
                u2 <<= 2;
            }
        }),
        // Q6_K: ql[128], qh[64], scales[16] (i8), d.
        14 => blocks.zip(y.chunks_exact_mut(256)).for_each(|(b, o)| {
            let d = h(b, 208);
            for half in 0..2 {
                let ql = &b[half * 64..];
                let qh = &b[128 + half * 32..];
                let sc = &b[192 + half * 8..];
                let o = &mut o[half * 128..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    o[l] = d * sc[is] as i8 as f32 * q1 as f32;
                    o[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                    o[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                    o[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
                }
            }
        }),
        _ => return None,
    }
    Some(y)
}

/// ggml types `dequantize` decodes.
pub fn supported(ty: u32) -> bool {
    matches!(ty, 0 | 1 | 2 | 3 | 6 | 7 | 8 | 10 | 11 | 12 | 13 | 14 | 30 | 39)
}

/// The FP4 (E2M1) values of the 16 codes: sign bit 3, then 0, .5, 1, 1.5, 2, 3, 4, 6.
const E2M1: [f32; 16] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// An E8M0 scale: 2^(e - 127).
fn e8m0(e: u8) -> f32 {
    (2.0f32).powi(e as i32 - 127)
}

pub const MXFP4: u32 = 39;

/// ggml MXFP4 blocks of a tensor with `cols` values per row, moved bit for bit
/// into MLX's mxfp4 layout: codes packed 8 to a little-endian u32, value 0 in
/// the low nibble (returned as bytes, 4 per word), and one E8M0 byte per 32
/// values. The E2M1 codes and exponents are the same in both formats.
pub fn mxfp4_to_mlx(data: &[u8], n: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    if n % 32 != 0 || data.len() < n / 32 * 17 {
        return None;
    }
    let blocks = n / 32;
    let mut codes = Vec::with_capacity(n / 2);
    let mut scales = Vec::with_capacity(blocks);
    for b in data.chunks_exact(17).take(blocks) {
        scales.push(b[0]);
        let q = &b[1..];
        // Values 2i and 2i+1 share a byte in MLX; ggml keeps j with j+16.
        let code = |v: usize| if v < 16 { q[v] & 0xF } else { q[v - 16] >> 4 };
        for i in 0..16 {
            codes.push(code(2 * i) | (code(2 * i + 1) << 4));
        }
    }
    Some((codes, scales))
}

/// Bits to re-quantize a ggml type to in MLX's affine format: ≤4-bit types to 4,
/// the rest to 8; None keeps it a float tensor.
pub fn requant_bits(ty: u32) -> Option<i32> {
    match ty {
        2 | 3 | 10 | 11 | 12 => Some(4),
        6 | 7 | 8 | 13 | 14 => Some(8),
        _ => None,
    }
}
