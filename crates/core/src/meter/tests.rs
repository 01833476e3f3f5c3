use super::*;

fn usage(prompt: u64, completion: u64) -> Metered {
    Metered::Usage(Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion })
}

fn meter(content_type: &str, chunks: &[&[u8]], end: bool) -> Metered {
    let mut m = Meter::new(Some(content_type));
    for c in chunks {
        m.feed(c);
    }
    m.finish(end)
}

fn json(body: &str) -> Metered {
    meter("application/json", &[body.as_bytes()], true)
}

const SSE: &str = concat!(
    ": keep-alive\r\n\r\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo \u{1F600}\"}}],\"usage\":null}\r\n\r\n",
    "event: message\r\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"data: {\\\"usage\\\":{}}\"}}]}\r\n\r\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,",
    "\"total_tokens\":46}}\r\n\r\n",
    "data: [DONE]\r\n\r\n",
);

#[test]
fn json_usage() {
    let body = r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    assert_eq!(json(body), usage(5, 7));
    assert_eq!(meter("Application/JSON; charset=utf-8", &[body.as_bytes()], true), usage(5, 7));
    // Split anywhere.
    for i in 0..body.len() {
        let (a, b) = body.as_bytes().split_at(i);
        assert_eq!(meter("application/json", &[a, b], true), usage(5, 7), "split at {i}");
    }
    // Total computed when absent; embeddings have no completion.
    assert_eq!(json(r#"{"usage":{"prompt_tokens":5,"completion_tokens":7}}"#), usage(5, 7));
    assert_eq!(json(r#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#), usage(8, 0));
    // Whole floats are integers.
    assert_eq!(json(r#"{"usage":{"prompt_tokens":5.0,"completion_tokens":7,"total_tokens":1.2e1}}"#), usage(5, 7));
    // The Responses API's spelling.
    assert_eq!(json(r#"{"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}"#), usage(3, 4));
}

#[test]
fn json_without_usage() {
    assert_eq!(json(r#"{"id":"x","choices":[]}"#), Metered::Unmeasured("no_usage"));
    assert_eq!(json(r#"{"usage":null}"#), Metered::Unmeasured("no_usage"));
    assert_eq!(json(r#"{"error":{"message":"rate limited"}}"#), Metered::Unmeasured("no_usage"));
    assert_eq!(json(r#"{"usage":{"prompt_tokens":1}"#), Metered::Unmeasured("malformed_body"));
    assert_eq!(json(""), Metered::Unmeasured("no_usage"));
    assert_eq!(json("x"), Metered::Unmeasured("malformed_body"));
    assert_eq!(json("[1,2]"), Metered::Unmeasured("malformed_body"));
    // Two top-level usages: which would count? Neither.
    let twice = r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#;
    assert_eq!(json(twice), Metered::Unmeasured("malformed_body"));
}

#[test]
fn malformed_usage_is_refused() {
    for bad in [
        r#""#,
        r#""prompt_tokens":"5","completion_tokens":7"#,
        r#""prompt_tokens":5.5,"completion_tokens":7"#,
        r#""prompt_tokens":-5,"completion_tokens":7"#,
        r#""prompt_tokens":5,"completion_tokens":-0.5"#,
        r#""prompt_tokens":5,"completion_tokens":7,"total_tokens":13"#,
        r#""prompt_tokens":5,"completion_tokens":7,"total_tokens":"12""#,
        r#""prompt_tokens":10000001,"completion_tokens":7"#,
        r#""prompt_tokens":1e300,"completion_tokens":7"#,
        r#""prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615"#,
        r#""prompt_tokens":5,"completion_tokens":null"#,
        r#""prompt_tokens":true"#,
        r#""completion_tokens":7"#,
        r#""input_tokens":[1],"output_tokens":2"#,
    ] {
        let body = format!(r#"{{"usage":{{{bad}}}}}"#);
        assert_eq!(json(&body), Metered::Unmeasured("malformed_usage"), "{body}");
    }
    for bad in [r#"{"usage":"12"}"#, r#"{"usage":12}"#, r#"{"usage":[]}"#] {
        assert_eq!(json(bad), Metered::Unmeasured("malformed_usage"), "{bad}");
    }
    // At the limit is fine.
    let at = r#"{"usage":{"prompt_tokens":10000000,"completion_tokens":10000000}}"#;
    assert_eq!(json(at), usage(10_000_000, 10_000_000));
}

#[test]
fn json_over_the_cap_is_too_large() {
    let mut m = Meter::new(Some("application/json"));
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..4 {
        m.feed(&chunk);
    }
    m.feed(br#"{"usage":{"prompt_tokens":1}}"#);
    assert!(matches!(&m.kind, Kind::Json { body, too_large: true } if body.is_empty()));
    assert_eq!(m.finish(true), Metered::Unmeasured("too_large"));
}

#[test]
fn json_cut_is_cut() {
    let body = br#"{"usage":{"prompt_tokens":5,"completion_tokens":7}}"#;
    assert_eq!(meter("application/json", &[body], false), Metered::Unmeasured("cut"));
}

#[test]
fn other_bodies_are_not_read() {
    assert_eq!(meter("text/plain", &[b"usage"], true), Metered::Unmeasured("unsupported_content_type"));
    assert_eq!(Meter::new(None).finish(true), Metered::Unmeasured("unsupported_content_type"));
    let mut m = Meter::for_response(Some("application/json"), Some("gzip"));
    m.feed(br#"{"usage":{"prompt_tokens":5}}"#);
    assert_eq!(m.finish(true), Metered::Unmeasured("content_encoding"));
    let mut m = Meter::for_response(Some("application/json"), Some("identity"));
    m.feed(br#"{"usage":{"prompt_tokens":5}}"#);
    assert_eq!(m.finish(true), usage(5, 0));
}

#[test]
fn sse_usage_split_at_every_byte() {
    let bytes = SSE.as_bytes();
    assert_eq!(meter("text/event-stream", &[bytes], true), usage(12, 34));
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(meter("text/event-stream", &[a, b], true), usage(12, 34), "split at {i}");
        // And cut there: the usage counts once its event is complete.
        let cut = meter("text/event-stream", &[a], false);
        // Complete at the CR of the blank line after it.
        let complete = SSE.find("data: [DONE]").unwrap() - 1;
        let expected = if i >= complete { usage(12, 34) } else { Metered::Unmeasured("cut") };
        assert_eq!(cut, expected, "cut at {i}");
    }
    // One byte at a time.
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(meter("text/event-stream", &singles, true), usage(12, 34));
    // With LF only, and with CR only.
    let lf = SSE.replace("\r\n", "\n");
    let cr = SSE.replace("\r\n", "\r");
    for text in [&lf, &cr] {
        for i in 0..=text.len() {
            let (a, b) = text.as_bytes().split_at(i);
            assert_eq!(meter("text/event-stream; charset=utf-8", &[a, b], true), usage(12, 34), "split at {i}");
        }
    }
}

#[test]
fn sse_last_usage_wins_and_done_is_ignored() {
    let text = concat!(
        "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), usage(2, 3));
    // Data on two lines is one event.
    let text = "data: {\"usage\":\ndata: {\"prompt_tokens\":4,\"completion_tokens\":5}}\n\n";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), usage(4, 5));
    // The last event counts without its blank line at the end of the stream.
    let text = "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), usage(4, 5));
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], false), Metered::Unmeasured("cut"));
    // The Responses API's completed event.
    let text = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":6,\"output_tokens\":7,\"total_tokens\":13}}}\n\n";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), usage(6, 7));
}

#[test]
fn sse_without_usage() {
    let text = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"usage\":null}\n\ndata: [DONE]\n\n";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), Metered::Unmeasured("no_usage"));
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], false), Metered::Unmeasured("cut"));
    assert_eq!(meter("text/event-stream", &[], true), Metered::Unmeasured("no_usage"));
    // Not JSON, or usage as text inside a string: no usage.
    let text = "data: usage\n\ndata: {\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":1}\"}\n\n";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), Metered::Unmeasured("no_usage"));
}

#[test]
fn sse_malformed_usage_is_refused() {
    let text = "data: {\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], true), Metered::Unmeasured("malformed_usage"));
    assert_eq!(meter("text/event-stream", &[text.as_bytes()], false), Metered::Unmeasured("malformed_usage"));
}

#[test]
fn sse_memory_is_bounded() {
    let mut m = Meter::new(Some("text/event-stream"));
    let big = vec![b'x'; 64 << 10];
    m.feed(b"data: {\"content\":\"");
    for _ in 0..40 {
        m.feed(&big);
    }
    m.feed(b"\"}\n\n");
    let Kind::Sse(sse) = &m.kind else { panic!() };
    assert!(sse.line.capacity() <= 2 * MAX_EVENT_BYTES && sse.data.capacity() <= 2 * MAX_EVENT_BYTES);
    // The oversized event is skipped; a later usage still counts.
    m.feed(b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n");
    assert_eq!(m.finish(true), usage(1, 2));
    // Without a later usage, the answer says something was skipped.
    let mut m = Meter::new(Some("text/event-stream"));
    m.feed(b"data: ");
    for _ in 0..40 {
        m.feed(&big);
    }
    m.feed(b"\n\n");
    assert_eq!(m.finish(true), Metered::Unmeasured("too_large"));
    // Many small data lines in one event, over the cap together.
    let mut m = Meter::new(Some("text/event-stream"));
    let line = [b"data: ".as_slice(), &big, b"\n"].concat();
    for _ in 0..40 {
        m.feed(&line);
    }
    let Kind::Sse(sse) = &m.kind else { panic!() };
    assert!(sse.data.capacity() <= 2 * MAX_EVENT_BYTES);
    m.feed(b"\n");
    assert_eq!(m.finish(true), Metered::Unmeasured("too_large"));
}
