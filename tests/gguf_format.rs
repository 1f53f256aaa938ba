//! The GGUF writer and reader against each other and against hand-computed layout facts.

use llmjp_convert::gguf::writer::{ALIGNMENT, encode_header};
use llmjp_convert::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};

fn sample_kv() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("a.u8".into(), Value::U8(7)),
        ("a.i8".into(), Value::I8(-7)),
        ("a.u16".into(), Value::U16(65535)),
        ("a.i16".into(), Value::I16(-2)),
        ("a.u32".into(), Value::U32(99584)),
        ("a.i32".into(), Value::I32(-99584)),
        ("a.f32".into(), Value::F32(1e-5)),
        ("a.bool".into(), Value::Bool(true)),
        ("a.u64".into(), Value::U64(1 << 40)),
        ("a.i64".into(), Value::I64(-(1 << 40))),
        ("a.f64".into(), Value::F64(0.1)),
        (
            "a.strs".into(),
            Value::ArrString(vec!["▁日本".into(), "".into(), "<0x0A>".into()]),
        ),
        ("a.f32s".into(), Value::ArrF32(vec![-127.5, 0.0, 3.25])),
        ("a.i32s".into(), Value::ArrI32(vec![1, 2, 6])),
        ("a.u32s".into(), Value::ArrU32(vec![4, 5])),
        ("a.u8s".into(), Value::ArrOther(0, vec![1, 2, 3], 3)),
    ]
}

#[test]
fn round_trip_all_value_types_and_alignment() {
    let tensors = vec![
        TensorInfo {
            name: "a".into(),
            dims: vec![3],
            ty: GgmlType::F32,
        },
        TensorInfo {
            name: "b".into(),
            dims: vec![32, 2],
            ty: GgmlType::Q8_0,
        },
        TensorInfo {
            name: "c".into(),
            dims: vec![5, 1, 1],
            ty: GgmlType::F16,
        },
    ];
    let kv = sample_kv();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("roundtrip.gguf");
    let f = std::fs::File::create(&path).unwrap();
    let mut w = GgufWriter::new(f, &kv, &tensors).unwrap();
    let payloads: Vec<Vec<u8>> = vec![vec![1; 12], vec![2; 68], vec![3; 10]];
    for p in &payloads {
        w.begin_tensor().unwrap();
        w.write(&p[..4]).unwrap();
        w.write(&p[4..]).unwrap();
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();

    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.kv, kv);
    assert_eq!(g.data_offset % ALIGNMENT, 0);
    for (t, (want, p)) in g.tensors.iter().zip(tensors.iter().zip(&payloads)) {
        assert_eq!(&t.info, want);
        assert_eq!(t.offset % ALIGNMENT, 0);
        assert_eq!(g.data(t), &p[..]);
    }
    // The second tensor starts at the first's 12 bytes rounded up to 32.
    assert_eq!(g.tensors[1].offset - g.data_offset, 32);
    assert_eq!(g.file_len() % ALIGNMENT, 0);
}

#[test]
fn header_bytes_are_little_endian_gguf_v3() {
    let (h, offsets) = encode_header(
        &[("k".into(), Value::U32(1))],
        &[TensorInfo {
            name: "t".into(),
            dims: vec![4, 2],
            ty: GgmlType::F32,
        }],
    )
    .unwrap();
    assert_eq!(&h[..4], b"GGUF");
    assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
    assert_eq!(
        u64::from_le_bytes(h[8..16].try_into().unwrap()),
        1,
        "tensor count"
    );
    assert_eq!(
        u64::from_le_bytes(h[16..24].try_into().unwrap()),
        1,
        "kv count"
    );
    // key "k": len 1, byte 'k', type 4 (u32), value 1
    assert_eq!(&h[24..32], &1u64.to_le_bytes());
    assert_eq!(h[32], b'k');
    assert_eq!(&h[33..37], &4u32.to_le_bytes());
    assert_eq!(&h[37..41], &1u32.to_le_bytes());
    assert_eq!(offsets, vec![0]);
    assert_eq!(h.len() % 32, 0);
}

#[test]
fn writer_refuses_wrong_sizes_and_bad_tables() {
    let t = vec![TensorInfo {
        name: "t".into(),
        dims: vec![4],
        ty: GgmlType::F32,
    }];
    let mut w = GgufWriter::new(Vec::new(), &[], &t).unwrap();
    w.begin_tensor().unwrap();
    w.write(&[0; 8]).unwrap();
    assert!(w.end_tensor().is_err(), "short tensor must be refused");
    let mut w = GgufWriter::new(Vec::new(), &[], &t).unwrap();
    w.begin_tensor().unwrap();
    assert!(w.write(&[0; 20]).is_err(), "long tensor must be refused");
    let w = GgufWriter::new(Vec::new(), &[], &t).unwrap();
    assert!(w.finish().is_err(), "missing tensor data must be refused");
    let dup = vec![t[0].clone(), t[0].clone()];
    assert!(GgufWriter::new(Vec::new(), &[], &dup).is_err());
    let q = vec![TensorInfo {
        name: "q".into(),
        dims: vec![33],
        ty: GgmlType::Q8_0,
    }];
    assert!(
        GgufWriter::new(Vec::new(), &[], &q).is_err(),
        "33 is not a whole Q8_0 block"
    );
}

#[test]
fn reader_rejects_truncated_and_lying_files() {
    let t = vec![TensorInfo {
        name: "t".into(),
        dims: vec![1024],
        ty: GgmlType::F32,
    }];
    let mut w = GgufWriter::new(Vec::new(), &sample_kv(), &t).unwrap();
    w.begin_tensor().unwrap();
    w.write(&[0; 4096]).unwrap();
    w.end_tensor().unwrap();
    let bytes = w.finish().unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let p = dir.join("lying.gguf");
    for cut in [3usize, 20, 100, bytes.len() - 100] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = GgufFile::open(&p)
            .err()
            .unwrap_or_else(|| panic!("cut at {cut} accepted"));
        assert!(format!("{e:#}").contains("not a valid GGUF"), "{e:#}");
    }
    // A string array claiming 2^60 items must be an error, not an allocation.
    let mut lie = bytes.clone();
    let pos = lie.windows(6).position(|w| w == b"a.strs").unwrap() + 6 + 4 + 4;
    lie[pos..pos + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&p, &lie).unwrap();
    assert!(GgufFile::open(&p).is_err());
}
