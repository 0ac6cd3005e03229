//! SQL functions over encoded histograms, so SQLite itself merges blobs in upserts and roll-ups.
//!
//! `hist_merge(a, b)` returns the merge of two encoded histograms; `hist_merge_agg(h)` is its aggregate form.

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::Connection;
use vitals::Histogram;

fn decode_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Histogram> {
    let bytes = ctx
        .get_raw(i)
        .as_blob()
        .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
    Histogram::decode(bytes).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
}

struct MergeAgg;

impl Aggregate<Histogram, Vec<u8>> for MergeAgg {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Histogram> {
        Ok(Histogram::new())
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Histogram) -> rusqlite::Result<()> {
        acc.merge(&decode_arg(ctx, 0)?);
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, acc: Option<Histogram>) -> rusqlite::Result<Vec<u8>> {
        Ok(acc.unwrap_or_default().encode())
    }
}

/// Registers the functions on a connection.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("hist_merge", 2, flags, |ctx| {
        let mut a = decode_arg(ctx, 0)?;
        a.merge(&decode_arg(ctx, 1)?);
        Ok(a.encode())
    })?;
    conn.create_aggregate_function("hist_merge_agg", 1, flags, MergeAgg)
}
