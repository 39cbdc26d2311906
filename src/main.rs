use mlx_rs::Array;
fn main() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]);
    let b = a.multiply(&a).unwrap();
    b.eval().unwrap();
    println!("{:?} peak={}", b.as_slice::<f32>(), mlx_rs::memory::peak_memory().unwrap());
}
