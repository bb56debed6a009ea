//! The feedback API's body: `{"feedback": [{"request_id", "row", "label",
//! "groups"}]}` — ground-truth labels for served predictions, joined by the
//! request id the gateway answered with (`x-request-id`) and the row of
//! that request. Bounded and checked before anything is stored: at most
//! [`MAX_ITEMS`] labels, request ids as the gateway accepts them (1–64 of
//! `[A-Za-z0-9_-]`), labels and group values of at most 256 bytes, at most
//! 8 group attributes; unknown fields are refused.

use citadel_control::FeedbackItem;

/// Labels in one call.
pub const MAX_ITEMS: usize = 10_000;
/// Rows of one request a label can name.
pub const MAX_ROW: u32 = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    feedback: Vec<FeedbackItem>,
}

/// A refusal, worded for the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFeedback(pub String);

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses and checks a feedback body; `classes`, when known, are the
/// labels the endpoint's models can predict (others are refused).
pub fn parse(body: &[u8], classes: Option<&[String]>) -> Result<Vec<FeedbackItem>, BadFeedback> {
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        BadFeedback(format!(
            "the body is not feedback ({e}); send {{\"feedback\": [{{\"request_id\": \"…\", \"row\": 0, \"label\": \"…\", \"groups\": {{\"sex\": \"…\"}}}}]}}"
        ))
    })?;
    if b.feedback.is_empty() {
        return Err(BadFeedback("the body holds no labels".into()));
    }
    if b.feedback.len() > MAX_ITEMS {
        return Err(BadFeedback(format!("at most {MAX_ITEMS} labels a call (got {})", b.feedback.len())));
    }
    for (i, f) in b.feedback.iter().enumerate() {
        if !valid_id(&f.request_id) {
            return Err(BadFeedback(format!(
                "feedback[{i}].request_id is not a request id the gateway gives (1 to 64 letters, digits, '-' or '_')"
            )));
        }
        if f.row >= MAX_ROW {
            return Err(BadFeedback(format!("feedback[{i}].row must be below {MAX_ROW}")));
        }
        if f.label.is_empty() || f.label.len() > 256 {
            return Err(BadFeedback(format!("feedback[{i}].label must be 1 to 256 bytes")));
        }
        if let Some(c) = classes
            && !c.iter().any(|x| x == &f.label)
        {
            return Err(BadFeedback(format!(
                "feedback[{i}].label {:?} is not a class the endpoint predicts ({})",
                f.label.chars().take(40).collect::<String>(),
                c.join(", ")
            )));
        }
        if f.groups.len() > 8 {
            return Err(BadFeedback(format!("feedback[{i}].groups holds more than 8 attributes")));
        }
        if f.groups.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256) {
            return Err(BadFeedback(format!("feedback[{i}].groups: names must be 1 to 64 bytes, values at most 256")));
        }
    }
    Ok(b.feedback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_feedback_parses_and_bad_feedback_is_refused_with_a_reason() {
        let classes = vec!["<=50K".to_string(), ">50K".to_string()];
        let ok = br#"{"feedback": [{"request_id": "r-1", "row": 2, "label": ">50K", "groups": {"sex": "Female"}}]}"#;
        let items = parse(ok, Some(&classes)).unwrap();
        assert_eq!(items[0].row, 2);
        assert_eq!(items[0].groups["sex"], "Female");
        for (body, why) in [
            (&br#"{"feedback": []}"#[..], "no labels"),
            (br#"{"feedback": [{"request_id": "a b", "label": ">50K"}]}"#, "request_id"),
            (br#"{"feedback": [{"request_id": "a", "label": "maybe"}]}"#, "not a class"),
            (br#"{"feedback": [{"request_id": "a", "label": ">50K", "extra": 1}]}"#, "not feedback"),
            (br#"{"feedback": [{"request_id": "a", "label": ">50K", "row": -1}]}"#, "not feedback"),
            (br#"[1, 2]"#, "not feedback"),
        ] {
            let e = parse(body, Some(&classes)).unwrap_err();
            assert!(e.0.contains(why), "{}: {}", String::from_utf8_lossy(body), e.0);
        }
    }
}
