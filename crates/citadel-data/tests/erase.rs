//! Erasure of a subject's rows from a stored version: the rows are found
//! through pseudonyms, tokens and numbers; every other row and every row
//! group without the subject is kept byte for byte.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::{Array, StringArray};
use citadel_crypto::{DataKey, DataProtector};
use citadel_data::erase::{self, Matcher, Subject};
use citadel_data::ingest::{DATA_FILE, ROWS_FILE, SAMPLE_FILE};
use citadel_data::{DataError, Expectations, ingest};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const SPEC: &str = r#"
[columns.email]
mask = { kind = "pseudonymize" }
[columns.ssn]
mask = { kind = "tokenize" }
[columns.zip]
type = "string"
mask = { kind = "generalize", keep = 2 }
"#;

fn protector() -> DataProtector {
    DataProtector::new(&DataKey::from_bytes(&[7; 32]).unwrap()).unwrap()
}

/// 150,000 rows: three row groups of 65,536 rows or fewer. The subject
/// (`subject@example.org`) has rows 70,001 and 70,500 only: both in the
/// second row group.
fn source(dir: &Path) -> std::path::PathBuf {
    let mut s = String::from("id,email,ssn,zip,age,income\n");
    for i in 0..150_000u32 {
        let email =
            if i == 70_001 || i == 70_500 { "subject@example.org".to_string() } else { format!("u{i}@example.org") };
        let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 600, 10 + i % 80, 1000 + i % 9000);
        writeln!(s, "{i},{email},{ssn},{:05},{},{}", 10000 + i % 80000, 18 + i % 60, 20_000 + (i * 37) % 90_000)
            .unwrap();
    }
    let p = dir.join("people.csv");
    std::fs::write(&p, s).unwrap();
    p
}

fn stored(dir: &Path) -> (citadel_data::IngestReport, std::path::PathBuf) {
    let spec = Expectations::parse(SPEC).unwrap();
    let out = ingest(&source(dir), &spec, &protector(), &dir.join("v1"), None, &|_| {}).unwrap();
    (out.report, out.dir)
}

fn schema(dir: &Path) -> arrow_schema::SchemaRef {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(dir.join(DATA_FILE)).unwrap())
        .unwrap()
        .schema()
        .clone()
}

fn rows(path: &Path) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows() as usize
}

fn subject(pairs: &[&str]) -> Subject {
    Subject::parse(&pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

/// The raw bytes of each row group's column chunks.
fn group_bytes(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let meta = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().metadata().clone();
    meta.row_groups()
        .iter()
        .map(|g| {
            let (start, len) = g.columns().iter().fold((u64::MAX, 0u64), |(s, l), c| {
                let (cs, cl) = c.byte_range();
                (s.min(cs), l + cl)
            });
            bytes[start as usize..(start + len) as usize].to_vec()
        })
        .collect()
}

#[test]
fn erasure_by_pseudonymized_email_removes_only_the_subjects_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, dir) = stored(tmp.path());
    let m = Matcher::new(&report, &schema(&dir), &[subject(&["email=subject@example.org"])], &protector())
        .unwrap()
        .unwrap();
    let found = erase::select(&dir, &m).unwrap();
    assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![70_001, 70_500]);
    let pseudonym = protector().pseudonymize("subject@example.org");
    let email = found[0]
        .1
        .column_by_name("email")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert_eq!(email, pseudonym, "rows are returned as stored");

    let out = tmp.path().join("erased");
    let stats = erase::erase(&dir, &out, &m, protector().row_hash_key(), 1000).unwrap();
    assert_eq!((stats.rows_before, stats.rows_removed, stats.row_groups, stats.row_groups_changed), (150_000, 2, 3, 1));
    assert_eq!(rows(&out.join(DATA_FILE)), 149_998);
    assert_eq!(rows(&out.join(ROWS_FILE)), 149_998, "row hashes follow the rows");
    assert_eq!(rows(&out.join(SAMPLE_FILE)), 1000);
    let m2 = Matcher::new(&report, &schema(&out), &[subject(&["email=subject@example.org"])], &protector())
        .unwrap()
        .unwrap();
    assert!(erase::select(&out, &m2).unwrap().is_empty(), "nothing of the subject is left");
    // The row groups without the subject are the same bytes, so the store
    // deduplicates them; the changed one is not.
    let (before, after) = (group_bytes(&dir.join(DATA_FILE)), group_bytes(&out.join(DATA_FILE)));
    assert_eq!(before.len(), after.len());
    let same: Vec<bool> = before.iter().zip(&after).map(|(a, b)| a == b).collect();
    let first_diff = before[0].iter().zip(&after[0]).position(|(a, b)| a != b);
    assert_eq!(
        same,
        [true, false, true],
        "lengths {:?} {:?}, first diff {first_diff:?}",
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        after.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let all = String::from_utf8_lossy(&std::fs::read(out.join(DATA_FILE)).unwrap()).to_string();
    assert!(!all.contains(&pseudonym[3..]));
}

#[test]
fn subjects_are_found_by_tokens_numbers_and_several_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, dir) = stored(tmp.path());
    let schema = schema(&dir);
    let p = protector();
    let find = |s: &[Subject]| {
        Matcher::new(&report, &schema, s, &p).unwrap().map(|m| erase::select(&dir, &m).unwrap().len()).unwrap_or(0)
    };
    // Row 5 has ssn 105-15-1005, and so has every row 5 + 18,000k (18,000 = lcm(600, 80, 9000)).
    assert_eq!(find(&[subject(&["ssn=105-15-1005"])]), 9);
    assert_eq!(find(&[subject(&["id=70001"])]), 1);
    assert_eq!(find(&[subject(&["id=70001.0"])]), 1, "numbers compare as numbers");
    assert_eq!(find(&[subject(&["id=not-a-number"])]), 0);
    assert_eq!(find(&[subject(&["email=subject@example.org", "id=70500"])]), 1, "conditions are ANDed");
    assert_eq!(find(&[subject(&["email=subject@example.org"]), subject(&["id=3"])]), 3, "subjects are ORed");
    assert_eq!(find(&[subject(&["email=nobody@example.org"])]), 0);
    assert_eq!(find(&[subject(&["no_such_column=1"])]), 0, "a version without the column cannot hold the subject");
    // A generalized column names nobody.
    let err = Matcher::new(&report, &schema, &[subject(&["zip=10005"])], &p).unwrap_err();
    assert!(matches!(err, DataError::NotAKey { ref column, .. } if column == "zip"), "{err}");
}

#[test]
fn malformed_conditions_and_key_files_are_refused_without_echoing_values() {
    for bad in ["email", "=x", "email="] {
        let err = Subject::parse(&[bad.to_string()]).unwrap_err();
        assert!(matches!(err, DataError::BadCondition { .. }), "{bad}");
    }
    let err = Subject::parse(&["secret-value-without-equals".into()]).unwrap_err().to_string();
    assert!(!err.contains("secret"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.csv");
    std::fs::write(&keys, "email,id\na@x.org,\n,7\n").unwrap();
    let subjects = Subject::from_csv(&keys).unwrap();
    assert_eq!(subjects.len(), 2);
    assert_eq!(subjects[1].conditions.len(), 1, "empty cells are no condition");
    std::fs::write(&keys, "email,id\na@x.org,1,extra\n").unwrap();
    let err = Subject::from_csv(&keys).unwrap_err().to_string();
    assert!(err.contains("line 2") && !err.contains("a@x.org"), "{err}");
    std::fs::write(&keys, "email\n").unwrap();
    assert!(Subject::from_csv(&keys).is_err());
}
