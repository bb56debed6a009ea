//! Malformed input gets a clear error naming the line or column, never a
//! panic; accepted quirks (BOM, mixed line endings) are read correctly.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, types::Int32Type};
use arrow_schema::{DataType, Field, Schema};
use citadel_crypto::{DataKey, DataProtector};
use citadel_data::{DataError, Expectations, ingest};

fn protector() -> DataProtector {
    DataProtector::new(&DataKey::from_bytes(&[5; 32]).unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(path: &Path, spec: &str) -> Result<citadel_data::IngestReport, DataError> {
    let out = tempfile::tempdir().unwrap();
    let spec = Expectations::parse(spec).unwrap();
    ingest(path, &spec, &protector(), &out.path().join("v"), None, &|_| {}).map(|o| o.report)
}

#[test]
fn malformed_csv_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        ("ragged", b"a,b,c\n1,2,3\n4,5\n", "line 3"),
        ("bad quoting", b"a,b\n1,\"unterminated\n2,3\n", "line"),
        ("invalid utf-8", b"a,b\n1,ok\n2,\xff\xfe\n", "not valid UTF-8"),
        ("empty", b"", "empty"),
        ("header only", b"a,b,c\n", "empty"),
    ];
    for (what, bytes, needle) in cases {
        let p = write(dir.path(), &format!("{what}.csv"), bytes);
        match run(&p, "") {
            Ok(r) => panic!("{what}: accepted {} rows", r.rows),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{what}: {msg}");
                assert!(!e.hint().is_empty());
            }
        }
    }
}

#[test]
fn a_late_value_of_the_wrong_type_is_named_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    // Types are inferred from the first batch (32,768 rows); the bad value comes later.
    let mut csv = String::from("id,score\n");
    for i in 0..40_000 {
        csv += &format!("{i},{}\n", i % 100);
    }
    csv += "40000,jane.doe@example.com\n";
    let p = write(dir.path(), "late.csv", csv.as_bytes());
    let e = run(&p, "").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("\"score\"") && msg.contains("line 40002") && msg.contains("integer"), "{msg}");
    assert!(!msg.contains("jane"), "the value must not be echoed: {msg}");
    assert!(e.hint().contains("type = \"string\""));
    // Declared as a string, the same file ingests.
    let r = run(&p, "[columns.score]\ntype = \"string\"\n").unwrap();
    assert_eq!(r.rows, 40_001);
}

#[test]
fn mixed_types_in_the_first_batch_make_a_string_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "mixed.csv", b"a,b\n1,x\n2.5,3\ntrue,4\n");
    let r = run(&p, "").unwrap();
    assert_eq!(r.column("a").unwrap().column_type.as_str(), "string");
    assert_eq!(r.column("b").unwrap().column_type.as_str(), "string");
}

#[test]
fn bom_and_mixed_line_endings_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bom.csv", b"\xEF\xBB\xBFname_id,v\r\n1,10\n2,20\r3,30\r\n");
    let r = run(&p, "").unwrap();
    assert_eq!(r.source_columns, ["name_id", "v"], "the BOM is not part of the first name");
    assert_eq!(r.rows, 3);
    let v = r.column("v").unwrap();
    assert_eq!((v.min, v.max), (Some(10.0), Some(30.0)));
}

#[test]
fn nested_parquet_is_refused_with_the_column_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.parquet");
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), Some(2)]), None]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tags", list.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef, Arc::new(list) as ArrayRef],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let e = run(&path, "").unwrap_err();
    assert!(matches!(&e, DataError::Unsupported { column, .. } if column == "tags"), "{e}");
    // A truncated Parquet file is named, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    let cut = write(dir.path(), "cut.parquet", &bytes[..bytes.len() / 2]);
    assert!(matches!(run(&cut, "").unwrap_err(), DataError::Parquet(_)));
}

#[test]
fn every_truncation_of_a_small_csv_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let full = b"id,email,amount\n1,\"a@x.org\",10.5\n2,\"b,c@y.org\",\n3,c@z.org,7\n";
    for n in 0..full.len() {
        let p = write(dir.path(), "t.csv", &full[..n]);
        let _ = run(&p, ""); // Ok or a named error; a panic fails the test.
    }
}
