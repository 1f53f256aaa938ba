//! ggml tensor types and GGUF metadata value types, as numbered by ggml.

use anyhow::{Result, bail};

/// The ggml tensor types this tool reads or writes (numbering from ggml.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            27 => Self::I64,
            28 => Self::F64,
            30 => Self::BF16,
            _ => bail!("unsupported ggml tensor type {id}"),
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::I8 => 24,
            Self::I16 => 25,
            Self::I32 => 26,
            Self::I64 => 27,
            Self::F64 => 28,
            Self::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 | Self::I32 => (1, 4),
            Self::F16 | Self::BF16 | Self::I16 => (1, 2),
            Self::I8 => (1, 1),
            Self::I64 | Self::F64 => (1, 8),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::F64 => "F64",
            Self::BF16 => "BF16",
        }
    }

    /// Bytes taken by one row of `n` elements; errors when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: u64) -> Result<u64> {
        let (be, bb) = self.block();
        if !n.is_multiple_of(be as u64) {
            bail!(
                "a row of {n} elements is not a whole number of {} blocks ({be} each)",
                self.name()
            );
        }
        Ok(n / be as u64 * bb as u64)
    }
}

/// GGUF metadata value type ids.
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A GGUF metadata value. Arrays hold one element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    ArrString(Vec<String>),
    ArrF32(Vec<f32>),
    ArrI32(Vec<i32>),
    ArrU32(Vec<u32>),
    /// Any other array, kept as (element type, raw little-endian payload, count) so it round-trips.
    ArrOther(u32, Vec<u8>, u64),
}

impl Value {
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => vt::U8,
            Value::I8(_) => vt::I8,
            Value::U16(_) => vt::U16,
            Value::I16(_) => vt::I16,
            Value::U32(_) => vt::U32,
            Value::I32(_) => vt::I32,
            Value::F32(_) => vt::F32,
            Value::Bool(_) => vt::BOOL,
            Value::String(_) => vt::STRING,
            Value::U64(_) => vt::U64,
            Value::I64(_) => vt::I64,
            Value::F64(_) => vt::F64,
            Value::ArrString(_)
            | Value::ArrF32(_)
            | Value::ArrI32(_)
            | Value::ArrU32(_)
            | Value::ArrOther(..) => vt::ARRAY,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short human-readable rendering (arrays summarised).
    pub fn summary(&self) -> String {
        fn arr<T: std::fmt::Debug>(v: &[T]) -> String {
            let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:?}")).collect();
            let more = if v.len() > 6 { ", ..." } else { "" };
            format!("[{}{}] ({} items)", head.join(", "), more, v.len())
        }
        match self {
            Value::String(s) if s.chars().count() > 120 => {
                let head: String = s.chars().take(100).collect();
                format!("{head:?}... ({} bytes)", s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::ArrString(v) => arr(v),
            Value::ArrF32(v) => arr(v),
            Value::ArrI32(v) => arr(v),
            Value::ArrU32(v) => arr(v),
            Value::ArrOther(t, _, n) => format!("[array of type {t}] ({n} items)"),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }

    /// JSON form for `inspect --json` (long arrays truncated to `max_items`).
    pub fn to_json(&self, max_items: usize) -> serde_json::Value {
        use serde_json::json;
        fn arr<T: serde::Serialize>(v: &[T], max: usize) -> serde_json::Value {
            if v.len() <= max {
                json!(v)
            } else {
                json!({"len": v.len(), "head": &v[..max]})
            }
        }
        match self {
            Value::String(s) => json!(s),
            Value::ArrString(v) => arr(v, max_items),
            Value::ArrF32(v) => arr(v, max_items),
            Value::ArrI32(v) => arr(v, max_items),
            Value::ArrU32(v) => arr(v, max_items),
            Value::ArrOther(t, _, n) => json!({"array_type": t, "len": n}),
            Value::Bool(b) => json!(b),
            Value::F32(v) => json!(v),
            Value::F64(v) => json!(v),
            Value::I8(v) => json!(v),
            Value::I16(v) => json!(v),
            Value::I32(v) => json!(v),
            Value::I64(v) => json!(v),
            other => json!(other.as_u64()),
        }
    }
}

/// llama.cpp's `llama_ftype` numbers for `general.file_type`.
pub mod file_type {
    pub const ALL_F32: u32 = 0;
    pub const MOSTLY_F16: u32 = 1;
    pub const MOSTLY_Q8_0: u32 = 7;
    pub const MOSTLY_BF16: u32 = 32;
}
