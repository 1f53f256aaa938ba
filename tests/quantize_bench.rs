//! llama.cpp's quantizer alone, for bench/quantize.sh (which times our CLI beside it, in the
//! same run): `LLMJP_QB_IN=F16.gguf LLMJP_QB_OUT=OUT.gguf LLMJP_QB_TYPE=Q4_K_M cargo test
//! --release --features oracle --test quantize_bench -- --ignored`. llama_model_quantize with
//! 2 threads, as `llama-quantize IN OUT TYPE 2`.

#[cfg(feature = "oracle")]
#[test]
#[ignore]
fn llama_quantize_once() {
    use llmjp_convert::oracle_quant::{QuantizeParams, model_quantize};
    use llmjp_convert::quantize::mix::Ftype;
    use std::path::PathBuf;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let (input, output) = (
        PathBuf::from(var("LLMJP_QB_IN")),
        PathBuf::from(var("LLMJP_QB_OUT")),
    );
    let ftype = Ftype::parse(&var("LLMJP_QB_TYPE")).unwrap();
    let mut p = QuantizeParams::new(ftype.id());
    p.nthread = 2;
    let t = std::time::Instant::now();
    model_quantize(&input, &output, &p).unwrap();
    eprintln!("llama_model_quantize: {:.2} s", t.elapsed().as_secs_f64());
}
