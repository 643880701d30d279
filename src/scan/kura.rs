//! Parquet in Kura's layout (lists, messages and metadata stored as JSON text) read as the
//! kind's declared schema: a plain Parquet scan plus a projection that converts each
//! stored column with the `kura_column` function.
//!
//! The conversion is a logical plan over DataFusion's own Parquet table, not a stream of
//! ours beside it, so the optimizer prunes columns and pushes filters into the Parquet
//! scan, `EXPLAIN` shows `ProjectionExec: expr=[kura_column(...)]` over `DataSourceExec`,
//! and a plan holding it ships to another process by the function's name.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{
    Column, Result as DfResult, ScalarValue, TableReference, exec_err, plan_err,
};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, col, lit,
};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::kind::{CheckpointKind, computed_len_of, utc_offset_of};
use crate::layout::logical_column;
use crate::{Error, Result};

/// `kura_column(stored, 'kind.field', 'file')`: one column of a kind's declared schema
/// from the column Kura stored (JSON text for lists and metadata, text for datetimes).
/// `file` names the checkpoint in errors. For a computed column (`count` of a cluster),
/// `stored` is the list it counts; for a column the file lacks, `stored` is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KuraColumn {
    signature: Signature,
}

impl KuraColumn {
    pub const NAME: &'static str = "kura_column";

    pub fn new() -> Self {
        KuraColumn {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }

    /// The function as a `ScalarUDF`, to register in a session.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(KuraColumn::new())
    }
}

impl Default for KuraColumn {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind's field named by `kind.field`.
fn declared_field(target: &str) -> Result<FieldRef> {
    let bad = || Error::config(format!("{}: unknown column {target:?}", KuraColumn::NAME));
    let (kind, field) = target.split_once('.').ok_or_else(bad)?;
    let kind: CheckpointKind = kind.parse().map_err(|_| bad())?;
    let schema = kind.schema();
    let field = schema.field_with_name(field).map_err(|_| bad())?;
    Ok(Arc::new(field.clone()))
}

fn text_argument<'a>(args: &'a [Option<&'a ScalarValue>], i: usize) -> DfResult<&'a str> {
    match args.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s))) => Ok(s),
        _ => plan_err!(
            "{}: argument {} must be a text literal",
            KuraColumn::NAME,
            i + 1
        ),
    }
}

impl ScalarUDFImpl for KuraColumn {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        // return_field_from_args gives the type, from the target literal.
        plan_err!("{} needs its target as a literal", Self::NAME)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let target = text_argument(args.scalar_arguments, 1)?;
        Ok(declared_field(target)?)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let (
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(target))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(file))),
        ) = (&args.args[1], &args.args[2])
        else {
            return exec_err!("{}: target and file must be text literals", Self::NAME);
        };
        let field = declared_field(target)?;
        let stored = args.args[0].to_array(args.number_rows)?;
        // `logical_column` finds its input by name: the stored column, or the list a
        // computed column counts. A column the file does not have comes as NULL: the
        // declared default, a null, or (a required column) the error, when it is read.
        let batch = match stored.data_type() {
            DataType::Null => RecordBatch::try_new_with_options(
                Arc::new(Schema::empty()),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(args.number_rows)),
            )?,
            _ => one_column_batch(stored_source(&field), stored)?,
        };
        let column = logical_column(&field, &batch, file).map_err(Error::from)?;
        Ok(ColumnarValue::Array(column))
    }
}

/// The stored column a declared column is made from: itself, the list a computed column
/// counts, or the datetime text a UTC offset column is read from (Kura's files have no
/// offset columns: an aware datetime's text carries its offset).
fn stored_source(field: &Field) -> &str {
    computed_len_of(field)
        .or_else(|| utc_offset_of(field))
        .unwrap_or(field.name())
}

fn one_column_batch(name: &str, array: ArrayRef) -> Result<RecordBatch> {
    let schema = Schema::new(vec![Field::new(name, array.data_type().clone(), true)]);
    Ok(RecordBatch::try_new(Arc::new(schema), vec![array])?)
}

/// The table of a Kura-layout Parquet checkpoint of `kind`: `stored` is the Parquet table
/// as written (DataFusion's listing table over the file or parts), `file` names it in
/// errors.
pub fn kura_layout_table(
    kind: CheckpointKind,
    stored: Arc<dyn TableProvider>,
    file: &str,
) -> Result<Arc<dyn TableProvider>> {
    let stored_schema = stored.schema();
    let udf = Arc::new(KuraColumn::udf());
    let mut exprs: Vec<Expr> = Vec::new();
    for field in kind.schema().fields() {
        let source = stored_source(field);
        let stored_column = match stored_schema.index_of(source) {
            Ok(_) => col(Column::new_unqualified(source)),
            Err(_) => lit(ScalarValue::Null),
        };
        let expr = udf.call(vec![
            stored_column,
            lit(format!("{kind}.{}", field.name())),
            lit(file),
        ]);
        exprs.push(expr.alias(field.name()));
    }
    let plan =
        LogicalPlanBuilder::scan(TableReference::bare(file), provider_as_source(stored), None)?
            .project(exprs)?
            .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// A plan decoded from another process with its `kura_column` calls rebuilt from their
/// literal targets, and the projections holding them, so that its columns carry the field
/// metadata the kind declares (which tells, e.g., that `metadata` is JSON text): DataFusion's
/// plan message keeps a function's type and nullability, not its field.
pub fn restore_declared_fields(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
            return Ok(Transformed::no(node));
        };
        if !projection.expr().iter().any(|e| calls_kura_column(&e.expr)) {
            return Ok(Transformed::no(node));
        }
        let input = Arc::clone(projection.input());
        let schema = input.schema();
        let exprs = projection
            .expr()
            .iter()
            .map(|e| {
                Ok(ProjectionExpr {
                    expr: redeclare(&e.expr, &schema)?,
                    alias: e.alias.clone(),
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Transformed::yes(
            Arc::new(ProjectionExec::try_new(exprs, input)?) as Arc<dyn ExecutionPlan>,
        ))
    })
    .map(|t| t.data)
}

fn kura_column_call(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarFunctionExpr> {
    expr.downcast_ref::<ScalarFunctionExpr>()
        .filter(|f| f.fun().name() == KuraColumn::NAME)
}

fn calls_kura_column(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|e| Ok(kura_column_call(e).is_some()))
        .unwrap_or(false)
}

/// `expr` with each `kura_column` call built again over `schema` (its field from its
/// target).
fn redeclare(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> DfResult<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| {
            let Some(call) = kura_column_call(&e) else {
                return Ok(Transformed::no(e));
            };
            let rebuilt = ScalarFunctionExpr::try_new(
                Arc::new(call.fun().clone()),
                call.args().to_vec(),
                schema,
                Arc::new(call.config_options().clone()),
            )?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn PhysicalExpr>))
        })
        .map(|t| t.data)
}
