//! The encoding of `Serde<T>` values: MessagePack (`rmp-serde`, structs as maps with field
//! names, what `Serde<T>` uses) against postcard (the wire format, not self-describing) and CBOR
//! (`ciborium`), encoding and decoding a struct-heavy value: 10,000 records of a string, numbers,
//! a vector of strings, a tuple and an `Option` each. Sizes are printed before the timings.
//! `Serde<T>` round trip` adds forkgraph's own work (the copy into a `Value`, the type check).
//!
//! Run: `cargo bench --bench codec`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use forkgraph::{IntoValue, Serde, Value};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    score: f64,
    tags: Vec<String>,
    position: (f32, f32),
    active: bool,
    parent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Table {
    title: String,
    records: Vec<Record>,
    meta: BTreeMap<String, i64>,
}

fn table(n: u64) -> Table {
    Table {
        title: "bench".into(),
        records: (0..n)
            .map(|i| Record {
                id: i * 7919,
                name: format!("record-{i}"),
                score: i as f64 * 0.5,
                tags: vec!["a".into(), format!("t{}", i % 13)],
                position: (i as f32, -(i as f32)),
                active: i % 2 == 0,
                parent: (i % 3 != 0).then_some(i as u32 / 2),
            })
            .collect(),
        meta: (0..100).map(|i| (format!("k{i}"), i)).collect(),
    }
}

fn cbor(t: &Table) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(t, &mut out).unwrap();
    out
}

fn codecs(c: &mut Criterion) {
    let t = table(10_000);
    let post = postcard::to_stdvec(&t).unwrap();
    let mp = rmp_serde::to_vec_named(&t).unwrap();
    let cb = cbor(&t);
    eprintln!(
        "sizes: postcard {} B, MessagePack (named) {} B, CBOR {} B",
        post.len(),
        mp.len(),
        cb.len()
    );
    assert_eq!(postcard::from_bytes::<Table>(&post).unwrap(), t);
    assert_eq!(rmp_serde::from_slice::<Table>(&mp).unwrap(), t);
    assert_eq!(ciborium::from_reader::<Table, _>(&cb[..]).unwrap(), t);

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(t.records.len() as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("postcard encode", |b| {
        b.iter(|| postcard::to_stdvec(black_box(&t)).unwrap())
    });
    g.bench_function("postcard decode", |b| {
        b.iter(|| postcard::from_bytes::<Table>(black_box(&post)).unwrap())
    });
    g.bench_function("messagepack encode", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&t)).unwrap())
    });
    g.bench_function("messagepack decode", |b| {
        b.iter(|| rmp_serde::from_slice::<Table>(black_box(&mp)).unwrap())
    });
    g.bench_function("cbor encode", |b| b.iter(|| cbor(black_box(&t))));
    g.bench_function("cbor decode", |b| {
        b.iter(|| ciborium::from_reader::<Table, _>(black_box(&cb[..])).unwrap())
    });
    g.bench_function("Serde<T> into_value", |b| {
        b.iter_batched(
            || t.clone(),
            |t| Serde(t).into_value(),
            BatchSize::LargeInput,
        )
    });
    let v: Value = Serde(t.clone()).into_value();
    g.bench_function("Serde<T> from a Value", |b| {
        b.iter(|| black_box(&v).to::<Serde<Table>>().unwrap())
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
