//! Erasure of a subject's rows from a stored version: the rows are found
//! through pseudonyms, tokens and numbers; every other row and every row
//! group without the subject is kept byte for byte.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::{Array, StringArray};
use citadel_crypto::{DataKey, DataProtector};
use citadel_data::erase::{self, Matcher, NumberFormat, Subject};
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

/// 150,000 rows: five row groups of 32,768 rows or fewer. The subject
/// (`subject@example.org`) has rows 70,001 and 70,500 only: both in the
/// third row group.
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

fn u64_column(path: &Path, name: &str) -> Vec<u64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let a = b.column_by_name(name).unwrap().as_any().downcast_ref::<arrow_array::UInt64Array>().unwrap().clone();
        out.extend(a.iter().flatten());
    }
    out
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

fn matcher(report: &citadel_data::IngestReport, dir: &Path, subjects: &[Subject]) -> Matcher {
    Matcher::new(report, &schema(dir), subjects, &protector(), &NumberFormat::default()).unwrap().unwrap()
}

#[test]
fn erasure_by_pseudonymized_email_removes_only_the_subjects_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, dir) = stored(tmp.path());
    let m = matcher(&report, &dir, &[subject(&["email=subject@example.org"])]);
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
    assert_eq!((stats.rows_before, stats.rows_removed, stats.row_groups, stats.row_groups_changed), (150_000, 2, 5, 1));
    assert_eq!(rows(&out.join(DATA_FILE)), 149_998);
    assert_eq!(rows(&out.join(ROWS_FILE)), 149_998, "row hashes follow the rows");
    // The sample keeps its rows but the subject's, and its bytes when it had none.
    let removed: Vec<u64> = [70_001usize, 70_500].iter().map(|&i| u64_column(&dir.join(ROWS_FILE), "row")[i]).collect();
    let (before_s, after_s) =
        (u64_column(&dir.join(SAMPLE_FILE), "__row_hash"), u64_column(&out.join(SAMPLE_FILE), "__row_hash"));
    let expected: Vec<u64> = before_s.iter().copied().filter(|h| !removed.contains(h)).collect();
    assert_eq!(after_s, expected);
    if after_s.len() == before_s.len() {
        assert!(std::fs::read(dir.join(SAMPLE_FILE)).unwrap() == std::fs::read(out.join(SAMPLE_FILE)).unwrap());
    }
    let m2 = matcher(&report, &out, &[subject(&["email=subject@example.org"])]);
    assert!(erase::select(&out, &m2).unwrap().is_empty(), "nothing of the subject is left");
    // The row groups without the subject are the same bytes, so the store
    // deduplicates them; the changed one is not.
    let (before, after) = (group_bytes(&dir.join(DATA_FILE)), group_bytes(&out.join(DATA_FILE)));
    assert_eq!(before.len(), after.len());
    let same: Vec<bool> = before.iter().zip(&after).map(|(a, b)| a == b).collect();
    let first_diff = before[0].iter().zip(&after[0]).position(|(a, b)| a != b);
    assert_eq!(
        same,
        [true, true, false, true, true],
        "lengths {:?} {:?}, first diff {first_diff:?}",
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        after.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // Spliced chunks carry their page indexes: readers that use them read it whole.
    let with_index = ParquetRecordBatchReaderBuilder::try_new_with_options(
        std::fs::File::open(out.join(DATA_FILE)).unwrap(),
        parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
    )
    .unwrap();
    assert_eq!(with_index.metadata().offset_index().map(|o| o.len()), Some(5));
    assert_eq!(with_index.build().unwrap().map(|b| b.unwrap().num_rows()).sum::<usize>(), 149_998);

    // The report of the new revision: recomputed from the rows kept.
    let note = "erased".to_string();
    let new = erase::reprofile(&report, &out, protector().row_hash_key(), note).unwrap();
    assert_eq!(new.rows, 149_998);
    let email = new.column("email").unwrap();
    assert_eq!(email.count, 149_998);
    let old_age = report.column("age").unwrap();
    let new_age = new.column("age").unwrap();
    assert_eq!(new_age.count, old_age.count - 2);
    assert!(new.notes.iter().any(|n| n == "erased"));
}

#[test]
fn subjects_are_found_by_tokens_numbers_and_several_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, dir) = stored(tmp.path());
    let schema = schema(&dir);
    let p = protector();
    let find = |s: &[Subject]| {
        Matcher::new(&report, &schema, s, &p, &NumberFormat::default())
            .unwrap()
            .map(|m| erase::select(&dir, &m).unwrap().len())
            .unwrap_or(0)
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
    assert_eq!(find(&[subject(&[" ssn = 105-15-1005 "])]), 9, "values are trimmed like the source's");
    let err = Matcher::new(&report, &schema, &[subject(&["zip=10005"])], &p, &NumberFormat::default()).unwrap_err();
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

/// Ids of 16 and more digits stay exact integers: their neighbours are
/// other people. Masked numbers and booleans match through the text ingest
/// masked (`7`, `1.5`, `true`), and locale numbers through the spec's format.
#[test]
fn big_integers_typed_masked_values_and_locale_numbers_match_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = String::from("acct,cust,vip,amount\n");
    for i in 0..50u64 {
        let vip = if i % 2 == 0 { "yes" } else { "no" };
        writeln!(s, "{},{},{vip},\"1.234,{}\"", 9_007_199_254_740_992u64 + i, 1000 + i, 10 + i).unwrap();
    }
    let src = tmp.path().join("a.csv");
    std::fs::write(&src, s).unwrap();
    let spec_text = r#"
[dataset]
decimal = ","
thousands = "."
[columns.cust]
type = "integer"
mask = { kind = "pseudonymize" }
[columns.vip]
type = "boolean"
mask = { kind = "pseudonymize" }
"#;
    let spec = Expectations::parse(spec_text).unwrap();
    let out = ingest(&src, &spec, &protector(), &tmp.path().join("v"), None, &|_| {}).unwrap();
    let schema = schema(&out.dir);
    let numbers = NumberFormat { decimal: ",".into(), thousands: Some(".".into()) };
    let p = protector();
    let find = |pairs: &[&str]| {
        Matcher::new(&out.report, &schema, &[subject(pairs)], &p, &numbers)
            .unwrap()
            .map(|m| erase::select(&out.dir, &m).unwrap().len())
            .unwrap_or(0)
    };
    assert_eq!(find(&["acct=9007199254740993"]), 1, "2^53 + 1 is not 2^53");
    assert_eq!(find(&["acct=9007199254740992"]), 1);
    assert_eq!(find(&["cust=1007"]), 1, "a pseudonymized integer column");
    assert_eq!(find(&["cust=1007", "vip=no"]), 1, "a pseudonymized boolean, written as in the source");
    assert_eq!(find(&["cust=1007", "vip=yes"]), 0);
    assert_eq!(find(&["amount=1.234,17"]), 1, "a number in the source's locale");
}
