use super::*;

const LIMITS: BodyLimits = BodyLimits { max_bytes: 1000, max_prompt_chars: 20, default_max_tokens: None };

fn body(json: &str) -> RequestBody<'_> {
    RequestBody {
        bytes: json.as_bytes(),
        declared_size: Some(json.len() as u64),
        content_type: Some("application/json"),
        forwarded: true,
        truncated: false,
        chunked: false,
    }
}

fn post(json: &str) -> Result<Inspected, Denial> {
    inspect(&body(json), "POST", LIMITS)
}

#[test]
fn model_names_cannot_disguise_another() {
    for bad in
        ["", "llama-3\u{0}gpt-4", "llama-3/../gpt-4", "a//b", "/gpt-4", "gpt 4", "gpt-4\n", "a\\b", "a%2Fb", "./x"]
    {
        let json = serde_json::json!({ "model": bad }).to_string();
        assert_eq!(inspect(&body(&json), "POST", LIMITS).unwrap_err().reason(), "invalid_body", "{bad:?}");
    }
    for good in ["gpt-4o", "meta-llama/Llama-3-8B", "ft:gpt-4o:org::x", "llama3:8b", "mistral-7b@v1"] {
        let json = serde_json::json!({ "model": good }).to_string();
        assert_eq!(inspect(&body(&json), "POST", LIMITS).unwrap().model.as_deref(), Some(good));
    }
}

#[test]
fn reads_completion_ceilings_and_stream_usage() {
    for (json, max, usage) in [
        (r#"{"max_tokens":10}"#, Some(10), false),
        (r#"{"max_tokens":10,"max_completion_tokens":30}"#, Some(30), false),
        (r#"{"max_output_tokens":7,"n":3}"#, Some(21), false),
        (r#"{"max_tokens":5,"best_of":4,"n":2}"#, Some(20), false),
        (r#"{"max_tokens":null,"stream":true,"stream_options":{"include_usage":true}}"#, None, true),
        (r#"{"stream":true,"stream_options":{"include_usage":false}}"#, None, false),
        // Other servers' spellings count; 0 and "no ceiling" leave the default.
        (r#"{"max_tokens":10,"max_tokens_to_sample":500}"#, Some(500), false),
        (r#"{"max_tokens":10,"n_predict":300}"#, Some(300), false),
        (r#"{"max_tokens":10,"options":{"num_predict":700}}"#, Some(700), false),
        (r#"{"max_tokens":10,"n_predict":-1}"#, None, false),
        (r#"{"max_tokens":0}"#, None, false),
    ] {
        let got = post(json).unwrap();
        assert_eq!((got.max_tokens, got.include_usage), (max, usage), "{json}");
    }
    // What two readers could read differently is refused.
    for bad in [
        r#"{"max_tokens":-1}"#,
        r#"{"max_tokens":"10"}"#,
        r#"{"max_tokens":10.5}"#,
        r#"{"max_tokens":1,"max_tokens":100000}"#,
        r#"{"n":129}"#,
        r#"{"stream_options":{"include_usage":"yes"}}"#,
    ] {
        assert_eq!(post(bad).unwrap_err().reason(), "invalid_body", "{bad}");
    }
}

#[test]
fn reads_model_stream_and_prompt_length() {
    for (json, model, stream, chars) in [
        (r#"{"model":"m","messages":[{"role":"user","content":"héllo"}]}"#, Some("m"), false, 5),
        (
            r#"{"model":"m","stream":true,"messages":[{"content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            Some("m"),
            true,
            2,
        ),
        (r#"{"prompt":["ab","cd"],"stream":false}"#, None, false, 4),
        (r#"{"input":[[1,2,3],[4]],"model":"e"}"#, Some("e"), false, 4),
        (r#"{"prompt":[1,2,3]}"#, None, false, 3),
        (r#"{"input":"hello","messages":null,"extra":{"deep":[1,2,{"x":null}]}}"#, None, false, 5),
        (r#"  {"messages":[{"role":"assistant","tool_calls":[]}]}"#, None, false, 0),
        (
            r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
            None,
            false,
            3,
        ),
    ] {
        let got = post(json).unwrap();
        assert_eq!((got.model.as_deref(), got.stream, got.prompt_chars), (model, stream, chars), "{json}");
    }
}

/// Every place an OpenAI-style request carries text the model reads counts
/// toward the prompt: each of these pushes a body of 21+ characters over
/// the limit of 20 although no `content`, `prompt` or `input` is long.
#[test]
fn every_prompt_bearing_field_counts() {
    let long = "x".repeat(21);
    let schema = r#"{"type":"object","properties":{"city":{"type":"string"}}}"#;
    for json in [
        format!(r#"{{"messages":[{{"role":"user","content":"hi","name":"{long}"}}]}}"#),
        format!(r#"{{"messages":[{{"role":"assistant","refusal":"{long}"}}]}}"#),
        format!(r#"{{"messages":[{{"content":[{{"type":"refusal","refusal":"{long}"}}]}}]}}"#),
        format!(r#"{{"messages":[{{"tool_calls":[{{"function":{{"name":"{long}","arguments":"{{}}"}}}}]}}]}}"#),
        format!(
            r#"{{"messages":[{{"tool_calls":[{{"function":{{"name":"f","arguments":"{{\"q\":\"{long}\"}}"}}}}]}}]}}"#
        ),
        format!(r#"{{"messages":[{{"tool_calls":[{{"type":"custom","custom":{{"name":"f","input":"{long}"}}}}]}}]}}"#),
        format!(r#"{{"messages":[{{"function_call":{{"name":"f","arguments":"{long}"}}}}]}}"#),
        format!(r#"{{"messages":[{{"function_call":{{"name":"{long}"}}}}]}}"#),
        format!(r#"{{"tools":[{{"type":"function","function":{{"name":"f","description":"{long}"}}}}]}}"#),
        format!(r#"{{"tools":[{{"type":"function","function":{{"name":"{long}"}}}}]}}"#),
        format!(r#"{{"tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]}}"#),
        format!(r#"{{"tools":[{{"type":"function","name":"f","description":"{long}"}}]}}"#),
        format!(r#"{{"tools":[{{"type":"function","name":"f","parameters":{schema}}}]}}"#),
        format!(r#"{{"tools":[{{"type":"custom","custom":{{"name":"f","description":"{long}"}}}}]}}"#),
        format!(r#"{{"tools":[{{"name":"f","input_schema":{schema}}}]}}"#),
        format!(r#"{{"functions":[{{"name":"f","description":"{long}"}}]}}"#),
        format!(r#"{{"functions":[{{"name":"f","parameters":{schema}}}]}}"#),
        format!(r#"{{"prompt":"hi","suffix":"{long}"}}"#),
        r#"{"prompt":[[1,2,3,4,5,6,7,8,9,10,11],[1,2,3,4,5,6,7,8,9,10]]}"#.to_owned(),
        format!(r#"{{"prompt":{{"id":"pmpt_1","variables":{{"city":"{long}"}}}}}}"#),
        format!(r#"{{"prompt":{{"id":"pmpt_1","variables":{{"doc":{{"type":"input_text","text":"{long}"}}}}}}}}"#),
        format!(r#"{{"input":["a","{long}"]}}"#),
        format!(r#"{{"input":[{{"role":"user","content":[{{"type":"input_text","text":"{long}"}}]}}]}}"#),
        format!(r#"{{"input":[{{"type":"function_call","call_id":"c","name":"f","arguments":"{long}"}}]}}"#),
        format!(r#"{{"input":[{{"type":"function_call_output","call_id":"c","output":"{long}"}}]}}"#),
        format!(r#"{{"input":[{{"type":"reasoning","summary":[{{"type":"summary_text","text":"{long}"}}]}}]}}"#),
        format!(r#"{{"input":"hi","instructions":"{long}"}}"#),
        format!(r#"{{"system":"{long}","messages":[]}}"#),
        format!(r#"{{"system":[{{"type":"text","text":"{long}"}}]}}"#),
        format!(r#"{{"response_format":{{"type":"json_schema","json_schema":{{"name":"w","schema":{schema}}}}}}}"#),
        format!(
            r#"{{"response_format":{{"type":"json_schema","json_schema":{{"name":"w","description":"{long}"}}}}}}"#
        ),
        format!(r#"{{"text":{{"format":{{"type":"json_schema","name":"w","schema":{schema}}}}}}}"#),
        format!(r#"{{"prediction":{{"type":"content","content":"{long}"}}}}"#),
        r#"{"messages":[{"content":"0123456789"},{"content":"0123456789X"}]}"#.to_owned(),
    ] {
        let denial = post(&json).unwrap_err();
        assert_eq!(denial.reason(), "prompt_too_long", "{json}");
    }
}

#[test]
fn images_audio_and_files_are_not_prompt_characters() {
    let data = "A".repeat(500);
    let json = format!(
        r#"{{"messages":[{{"role":"user","content":[
            {{"type":"text","text":"describe"}},
            {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}","detail":"high"}}}},
            {{"type":"input_audio","input_audio":{{"data":"{data}","format":"wav"}}}},
            {{"type":"file","file":{{"file_data":"{data}"}}}}
        ]}}],
        "input":[{{"role":"user","content":[{{"type":"input_image","image_url":"data:image/png;base64,{data}"}}]}}]}}"#
    );
    let limits = BodyLimits { max_bytes: 10_000, ..LIMITS };
    assert_eq!(inspect(&body(&json), "POST", limits).unwrap().prompt_chars, 8);
}

#[test]
fn refuses_what_it_cannot_read_unambiguously() {
    for (json, reason) in [
        ("not json", "invalid_body"),
        ("", "invalid_body"),
        ("[1,2]", "invalid_body"),
        (r#""model""#, "invalid_body"),
        (r#"{"model":"a","model":"b"}"#, "invalid_body"),
        (r#"{"model":"a","mod\u0065l":"b"}"#, "invalid_body"),
        (r#"{"stream":"true"}"#, "invalid_body"),
        (r#"{"model":7}"#, "invalid_body"),
        (r#"{"messages":"hi"}"#, "invalid_body"),
        (r#"{"model":"a"} trailing"#, "invalid_body"),
        (r#"{"model":"a""#, "invalid_body"),
        (r#"{"prompt":1.5}"#, "invalid_body"),
        (r#"{"messages":[{"content":5}]}"#, "invalid_body"),
        (r#"{"tools":{"function":{}}}"#, "invalid_body"),
        (r#"{"tools":[{"function":{"description":7}}]}"#, "invalid_body"),
        // Duplicates of a read field are refused at any depth, however spelled.
        (r#"{"messages":[{"content":"a","content":"b"}]}"#, "invalid_body"),
        (r#"{"tools":[{"function":{"description":"a","description":"b"}}]}"#, "invalid_body"),
        (r#"{"tools":[{"function":{"description":"a","descr\u0069ption":"b"}}]}"#, "invalid_body"),
        (r#"{"input":[{"type":"function_call","arguments":"a","arguments":"b"}]}"#, "invalid_body"),
        (r#"{"instructions":"a","instructions":"b"}"#, "invalid_body"),
        (r#"{"prompt":"this prompt is longer than twenty"}"#, "prompt_too_long"),
        (r#"{"messages":[{"content":"0123456789"},{"content":"0123456789X"}]}"#, "prompt_too_long"),
    ] {
        let denial = post(json).unwrap_err();
        assert_eq!(denial.reason(), reason, "{json}");
    }
}

#[test]
fn size_media_type_and_truncation() {
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(1000));
    assert_eq!(post(&big).unwrap_err().reason(), "body_too_large");
    let declared = RequestBody { declared_size: Some(5000), ..body("{}") };
    assert_eq!(inspect(&declared, "POST", LIMITS).unwrap_err().reason(), "body_too_large");
    let partial = RequestBody { truncated: true, ..body("{}") };
    assert_eq!(inspect(&partial, "POST", LIMITS).unwrap_err().reason(), "body_too_large");
    let missing = RequestBody { bytes: b"", declared_size: Some(20), forwarded: false, ..body("{}") };
    assert!(inspect(&missing, "POST", LIMITS).unwrap_err().to_string().contains("not forwarded"));
    let chunked = RequestBody { bytes: b"", declared_size: None, forwarded: false, chunked: true, ..body("{}") };
    assert!(inspect(&chunked, "POST", LIMITS).unwrap_err().to_string().contains("not forwarded"));
    let empty = RequestBody { bytes: b"", declared_size: Some(0), ..body("{}") };
    assert_eq!(inspect(&empty, "POST", LIMITS).unwrap_err().reason(), "invalid_body", "forwarded and empty: not JSON");
    for ct in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"] {
        assert!(inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, "POST", LIMITS).is_ok(), "{ct}");
    }
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        assert_eq!(
            inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, "POST", LIMITS).unwrap_err().reason(),
            "invalid_body",
            "{ct}"
        );
    }
    assert!(inspect(&RequestBody { content_type: None, ..body("{}") }, "POST", LIMITS).is_ok());
}

/// Through Envoy, a chunked or HTTP/2 body on a route that does not buffer
/// reaches the Check as nothing at all: no marker, no bytes, no length.
/// A method that carries a body must have it forwarded.
#[test]
fn a_body_never_forwarded_is_refused_not_taken_for_none() {
    let nothing = RequestBody { bytes: b"", declared_size: None, forwarded: false, ..body("{}") };
    for method in ["POST", "PUT", "PATCH", "post", "Post", "QUERY", "PROPFIND", ""] {
        let denial = inspect(&nothing, method, LIMITS).unwrap_err();
        assert_eq!(denial.reason(), "invalid_body", "{method}");
        let message = denial.to_string();
        assert!(message.contains("not forwarded") && message.contains("JSON body"), "{method}: {message}");
    }
    let zero = RequestBody { declared_size: Some(0), ..nothing };
    assert_eq!(inspect(&zero, "POST", LIMITS).unwrap_err().reason(), "invalid_body", "empty POST");
    for method in ["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"] {
        assert_eq!(inspect(&nothing, method, LIMITS), Ok(Inspected::default()), "{method}: no body to inspect");
        assert_eq!(inspect(&zero, method, LIMITS), Ok(Inspected::default()), "{method}");
    }
    // Bytes without the marker (another caller of Check) count as forwarded.
    let unmarked = RequestBody { forwarded: false, ..body(r#"{"model":"m"}"#) };
    assert_eq!(inspect(&unmarked, "POST", LIMITS).unwrap().model.as_deref(), Some("m"));
}
