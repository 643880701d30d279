//! SQL functions for checkpoint work, registered in every session:
//! - the JSON functions of datafusion-functions-json (`metadata->>'model'`,
//!   `json_get_int(metadata, 'turns')`, ...), for Kura's free-form metadata;
//! - `cosine_similarity(a, b)` over embedding lists, for nearest-neighbour queries;
//! - `kura_column(stored, 'kind.field', 'file')`, which reads Kura's Parquet layout
//!   (`crate::scan::kura`), and `hf_column(stored, 'kind.field', 'file')`, which reads
//!   Kura's Hugging Face datasets (`crate::scan::hf`); registered so that plans using them
//!   can be shipped by name.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::Result;

pub fn register(ctx: &mut SessionContext) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    ctx.register_udf(ScalarUDF::from(CosineSimilarity::new()));
    ctx.register_udf(crate::scan::kura::KuraColumn::udf());
    ctx.register_udf(crate::scan::hf::HfColumn::udf());
    Ok(())
}

/// `cosine_similarity(a, b)`: a·b / (|a||b|) for two lists of numbers of equal length;
/// null when either is null, empty, of different lengths, or all zeros.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CosineSimilarity {
    signature: Signature,
}

impl CosineSimilarity {
    pub fn new() -> Self {
        CosineSimilarity {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for CosineSimilarity {
    fn default() -> Self {
        Self::new()
    }
}

fn as_f64_lists(v: &ColumnarValue, rows: usize) -> DfResult<ArrayRef> {
    let arr = v.to_array(rows)?;
    let target = crate::kind::float_list_type();
    match arr.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            Ok(datafusion::arrow::compute::cast(&arr, &target)?)
        }
        DataType::Null => Ok(datafusion::arrow::array::new_null_array(&target, rows)),
        other => {
            exec_err!("cosine_similarity takes two lists of numbers (embeddings), found {other}")
        }
    }
}

impl ScalarUDFImpl for CosineSimilarity {
    fn name(&self) -> &str {
        "cosine_similarity"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let a = as_f64_lists(&args.args[0], rows)?;
        let b = as_f64_lists(&args.args[1], rows)?;
        let (a, b) = (a.as_list::<i32>(), b.as_list::<i32>());
        let mut out = Float64Builder::with_capacity(rows);
        for i in 0..rows {
            if a.is_null(i) || b.is_null(i) {
                out.append_null();
                continue;
            }
            let (x, y) = (a.value(i), b.value(i));
            let (x, y) = (
                x.as_primitive::<Float64Type>(),
                y.as_primitive::<Float64Type>(),
            );
            if x.len() != y.len() || x.is_empty() || x.null_count() > 0 || y.null_count() > 0 {
                out.append_null();
                continue;
            }
            let (mut dot, mut nx, mut ny) = (0.0f64, 0.0f64, 0.0f64);
            for (p, q) in x.values().iter().zip(y.values().iter()) {
                dot += p * q;
                nx += p * p;
                ny += q * q;
            }
            if nx == 0.0 || ny == 0.0 {
                out.append_null();
            } else {
                out.append_value(dot / (nx.sqrt() * ny.sqrt()));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
