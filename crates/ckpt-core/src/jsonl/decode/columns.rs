//! The columns a decoder builds: like Arrow's builders, but each can be rolled back to a
//! mark, so a line refused in skip mode leaves no half-row behind.

use std::sync::Arc;

use crate::kind::is_json_text;
use arrow::array::{
    ArrayRef, BooleanBufferBuilder, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields};

/// A column being built. Unlike arrow's builders these can be rolled back to a mark,
/// so a bad line in skip mode leaves no half-row behind.
pub(super) enum Col {
    Str(StrCol),
    I32(PrimCol<i32>),
    I64(PrimCol<i64>),
    F64(PrimCol<f64>),
    Bool(PrimCol<bool>),
    Ts(PrimCol<i64>),
    /// Raw JSON text of an object (metadata).
    Json(StrCol),
    StrList(ListCol<StrCol>),
    F64List(ListCol<PrimCol<f64>>),
    Messages(ListCol<MsgCol>),
}

#[derive(Clone, Copy)]
pub(super) struct Mark(
    pub(super) usize,
    pub(super) usize,
    pub(super) usize,
    pub(super) usize,
);

/// Which values of a column are null: their positions, since nulls are rare (most columns
/// never have one, and the embedding's numbers never do), so a valid value costs a count.
#[derive(Default)]
pub(super) struct Validity {
    pub(super) len: usize,
    pub(super) nulls: Vec<usize>,
}

impl Validity {
    #[inline]
    pub(super) fn push(&mut self, v: bool) {
        if !v {
            self.nulls.push(self.len);
        }
        self.len += 1;
    }
    pub(super) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        while self.nulls.last().is_some_and(|&i| i >= len) {
            self.nulls.pop();
        }
    }
    pub(super) fn nulls(&self) -> Option<NullBuffer> {
        if self.nulls.is_empty() {
            return None;
        }
        let mut b = BooleanBufferBuilder::new(self.len);
        b.append_n(self.len, true);
        for &i in &self.nulls {
            b.set_bit(i, false);
        }
        Some(NullBuffer::new(b.finish()))
    }
}

#[derive(Default)]
pub(super) struct StrCol {
    pub(super) offsets: Vec<i32>,
    pub(super) data: Vec<u8>,
    pub(super) valid: Validity,
}

impl StrCol {
    pub(super) fn new() -> Self {
        StrCol {
            offsets: vec![0],
            data: Vec::new(),
            valid: Validity::default(),
        }
    }
    pub(super) fn push(&mut self, s: &str) {
        self.data.extend_from_slice(s.as_bytes());
        self.offsets.push(self.data.len() as i32);
        self.valid.push(true);
    }
    pub(super) fn push_null(&mut self) {
        self.offsets.push(self.data.len() as i32);
        self.valid.push(false);
    }
    pub(super) fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    pub(super) fn mark(&self) -> Mark {
        Mark(self.len(), self.data.len(), 0, 0)
    }
    pub(super) fn rollback(&mut self, m: Mark) {
        self.offsets.truncate(m.0 + 1);
        self.valid.truncate(m.0);
        self.data.truncate(m.1);
    }
    pub(super) fn finish(self) -> StringArray {
        // Offsets are built monotonic and data is valid UTF-8 (it came from &str).
        StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            self.data.into(),
            self.valid.nulls(),
        )
    }
}

#[derive(Default)]
pub(super) struct PrimCol<T> {
    pub(super) values: Vec<T>,
    pub(super) valid: Validity,
}

impl<T: Default + Copy> PrimCol<T> {
    pub(super) fn push(&mut self, v: T) {
        self.values.push(v);
        self.valid.push(true);
    }
    pub(super) fn push_null(&mut self) {
        self.values.push(T::default());
        self.valid.push(false);
    }
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
    pub(super) fn mark(&self) -> Mark {
        Mark(self.len(), 0, 0, 0)
    }
    pub(super) fn rollback(&mut self, m: Mark) {
        self.values.truncate(m.0);
        self.valid.truncate(m.0);
    }
}

pub(super) struct MsgCol {
    pub(super) created_at: PrimCol<i64>,
    pub(super) offset: PrimCol<i32>,
    pub(super) role: StrCol,
    pub(super) content: StrCol,
}

impl MsgCol {
    pub(super) fn len(&self) -> usize {
        self.created_at.len()
    }
    pub(super) fn mark(&self) -> Mark {
        Mark(self.len(), self.role.data.len(), self.content.data.len(), 0)
    }
    pub(super) fn rollback(&mut self, m: Mark) {
        self.created_at.rollback(m);
        self.offset.rollback(m);
        self.role.rollback(Mark(m.0, m.1, 0, 0));
        self.content.rollback(Mark(m.0, m.2, 0, 0));
    }
}

pub(super) trait Child {
    fn child_len(&self) -> usize;
    fn child_mark(&self) -> Mark;
    fn child_rollback(&mut self, m: Mark);
}
impl Child for StrCol {
    fn child_len(&self) -> usize {
        self.len()
    }
    fn child_mark(&self) -> Mark {
        self.mark()
    }
    fn child_rollback(&mut self, m: Mark) {
        self.rollback(m)
    }
}
impl Child for PrimCol<f64> {
    fn child_len(&self) -> usize {
        self.len()
    }
    fn child_mark(&self) -> Mark {
        self.mark()
    }
    fn child_rollback(&mut self, m: Mark) {
        self.rollback(m)
    }
}
impl Child for MsgCol {
    fn child_len(&self) -> usize {
        self.len()
    }
    fn child_mark(&self) -> Mark {
        self.mark()
    }
    fn child_rollback(&mut self, m: Mark) {
        self.rollback(m)
    }
}

pub(super) struct ListCol<C> {
    pub(super) offsets: Vec<i32>,
    pub(super) valid: Validity,
    pub(super) child: C,
}

impl<C: Child> ListCol<C> {
    pub(super) fn new(child: C) -> Self {
        ListCol {
            offsets: vec![0],
            valid: Validity::default(),
            child,
        }
    }
    pub(super) fn close(&mut self, valid: bool) {
        self.offsets.push(self.child.child_len() as i32);
        self.valid.push(valid);
    }
    pub(super) fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    pub(super) fn mark(&self) -> Mark {
        let c = self.child.child_mark();
        Mark(self.len(), c.0, c.1, c.2)
    }
    pub(super) fn rollback(&mut self, m: Mark) {
        self.offsets.truncate(m.0 + 1);
        self.valid.truncate(m.0);
        self.child.child_rollback(Mark(m.1, m.2, m.3, 0));
    }
    pub(super) fn offsets(&mut self) -> (OffsetBuffer<i32>, Option<NullBuffer>) {
        (
            OffsetBuffer::new(ScalarBuffer::from(std::mem::take(&mut self.offsets))),
            self.valid.nulls(),
        )
    }
}

pub(super) fn list_item(dt: &DataType) -> Arc<Field> {
    match dt {
        DataType::List(f) => f.clone(),
        _ => unreachable!("list column of a list type"),
    }
}

impl Col {
    pub(super) fn new(field: &Field) -> Col {
        if is_json_text(field) {
            return Col::Json(StrCol::new());
        }
        match field.data_type() {
            DataType::Utf8 => Col::Str(StrCol::new()),
            DataType::Int32 => Col::I32(PrimCol::default()),
            DataType::Int64 => Col::I64(PrimCol::default()),
            DataType::Float64 => Col::F64(PrimCol::default()),
            DataType::Boolean => Col::Bool(PrimCol::default()),
            DataType::Timestamp(..) => Col::Ts(PrimCol::default()),
            DataType::List(item) => match item.data_type() {
                DataType::Utf8 => Col::StrList(ListCol::new(StrCol::new())),
                DataType::Float64 => Col::F64List(ListCol::new(PrimCol::default())),
                DataType::Struct(_) => Col::Messages(ListCol::new(MsgCol {
                    created_at: PrimCol::default(),
                    offset: PrimCol::default(),
                    role: StrCol::new(),
                    content: StrCol::new(),
                })),
                other => unreachable!("no kind has a list of {other}"),
            },
            other => unreachable!("no kind has a column of {other}"),
        }
    }

    pub(super) fn mark(&self) -> Mark {
        match self {
            Col::Str(c) | Col::Json(c) => c.mark(),
            Col::I32(c) => c.mark(),
            Col::I64(c) | Col::Ts(c) => c.mark(),
            Col::F64(c) => c.mark(),
            Col::Bool(c) => c.mark(),
            Col::StrList(c) => c.mark(),
            Col::F64List(c) => c.mark(),
            Col::Messages(c) => c.mark(),
        }
    }

    pub(super) fn rollback(&mut self, m: Mark) {
        match self {
            Col::Str(c) | Col::Json(c) => c.rollback(m),
            Col::I32(c) => c.rollback(m),
            Col::I64(c) | Col::Ts(c) => c.rollback(m),
            Col::F64(c) => c.rollback(m),
            Col::Bool(c) => c.rollback(m),
            Col::StrList(c) => c.rollback(m),
            Col::F64List(c) => c.rollback(m),
            Col::Messages(c) => c.rollback(m),
        }
    }

    pub(super) fn push_null(&mut self) {
        match self {
            Col::Str(c) | Col::Json(c) => c.push_null(),
            Col::I32(c) => c.push_null(),
            Col::I64(c) | Col::Ts(c) => c.push_null(),
            Col::F64(c) => c.push_null(),
            Col::Bool(c) => c.push_null(),
            Col::StrList(c) => c.close(false),
            Col::F64List(c) => c.close(false),
            Col::Messages(c) => c.close(false),
        }
    }

    pub(super) fn push_text(&mut self, s: &str) {
        match self {
            Col::Str(c) | Col::Json(c) => c.push(s),
            _ => unreachable!("defaults are JSON text"),
        }
    }

    pub(super) fn finish(self, dt: &DataType) -> ArrayRef {
        match self {
            Col::Str(c) | Col::Json(c) => Arc::new(c.finish()),
            Col::I32(c) => Arc::new(Int32Array::new(c.values.into(), c.valid.nulls())),
            Col::I64(c) => Arc::new(Int64Array::new(c.values.into(), c.valid.nulls())),
            Col::F64(c) => Arc::new(Float64Array::new(c.values.into(), c.valid.nulls())),
            Col::Bool(c) => {
                let nulls = c.valid.nulls();
                Arc::new(arrow::array::BooleanArray::new(
                    c.values.into_iter().collect(),
                    nulls,
                ))
            }
            Col::Ts(c) => Arc::new(TimestampMicrosecondArray::new(
                c.values.into(),
                c.valid.nulls(),
            )),
            Col::StrList(mut c) => {
                let (offsets, nulls) = c.offsets();
                Arc::new(ListArray::new(
                    list_item(dt),
                    offsets,
                    Arc::new(c.child.finish()),
                    nulls,
                ))
            }
            Col::F64List(mut c) => {
                let (offsets, nulls) = c.offsets();
                let child = Float64Array::new(
                    std::mem::take(&mut c.child.values).into(),
                    c.child.valid.nulls(),
                );
                Arc::new(ListArray::new(
                    list_item(dt),
                    offsets,
                    Arc::new(child),
                    nulls,
                ))
            }
            Col::Messages(mut c) => {
                let (offsets, nulls) = c.offsets();
                let item = list_item(dt);
                let DataType::Struct(fields) = item.data_type() else {
                    unreachable!("messages are structs")
                };
                let fields: Fields = fields.clone();
                let m = c.child;
                let children: Vec<ArrayRef> = vec![
                    Arc::new(TimestampMicrosecondArray::new(
                        m.created_at.values.into(),
                        None,
                    )),
                    Arc::new(m.role.finish()),
                    Arc::new(m.content.finish()),
                    Arc::new(Int32Array::new(
                        m.offset.values.into(),
                        m.offset.valid.nulls(),
                    )),
                ];
                let structs = StructArray::new(fields, children, None);
                Arc::new(ListArray::new(item, offsets, Arc::new(structs), nulls))
            }
        }
    }
}
