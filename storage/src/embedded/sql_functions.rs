//! SQL functions over encoded histograms, so SQLite itself merges blobs in upserts and roll-ups.
//!
//! `hist_merge(a, b)` returns the merge of two encoded histograms; `hist_merge_agg(h)` is its aggregate form.
//!
//! Over `hist_minute`'s per-view blobs ([`super::view_blob`]): `view_merge(a, b)` merges two, metric by metric;
//! `view_has(v, metric)` says whether a view has the metric (reading one byte); `view_pick(v, metric)` is that
//! metric's encoded histogram (NULL when absent); `view_of(metric, h)` wraps one metric's histogram as a view blob.

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::Connection;
use vitals::{Histogram, Metric};

fn decode_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Histogram> {
    Histogram::decode(blob_arg(ctx, i)?).map_err(user_error)
}

fn blob_arg<'a>(ctx: &'a Context<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    ctx.get_raw(i)
        .as_blob()
        .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
}

fn metric_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Metric> {
    let code: i64 = ctx.get(i)?;
    u8::try_from(code)
        .ok()
        .and_then(Metric::from_code)
        .ok_or_else(|| {
            rusqlite::Error::UserFunctionError(format!("no metric has code {code}").into())
        })
}

fn user_error(e: vitals::histogram::DecodeError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
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
    conn.create_aggregate_function("hist_merge_agg", 1, flags, MergeAgg)?;
    conn.create_scalar_function("view_merge", 2, flags, |ctx| {
        super::view_blob::merge(blob_arg(ctx, 0)?, blob_arg(ctx, 1)?).map_err(user_error)
    })?;
    conn.create_scalar_function("view_has", 2, flags, |ctx| {
        Ok(super::view_blob::has(
            blob_arg(ctx, 0)?,
            metric_arg(ctx, 1)?,
        ))
    })?;
    conn.create_scalar_function("view_pick", 2, flags, |ctx| {
        let metric = metric_arg(ctx, 1)?;
        super::view_blob::pick(blob_arg(ctx, 0)?, metric)
            .map(|s| s.map(<[u8]>::to_vec))
            .map_err(user_error)
    })?;
    conn.create_scalar_function("view_of", 2, flags, |ctx| {
        let metric = metric_arg(ctx, 0)?;
        Ok(super::view_blob::single(metric, blob_arg(ctx, 1)?))
    })
}
