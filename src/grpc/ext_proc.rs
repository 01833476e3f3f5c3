//! Envoy `envoy.service.ext_proc.v3.ExternalProcessor/Process`, in
//! observability mode: Envoy sends the response's headers and body as they go
//! by and waits for nothing, so metering adds no latency. Gatehouse answers
//! no message then (a proxy that cannot run ext_proc in observability mode,
//! such as Envoy Gateway, is told to go on unchanged after each one); it
//! reads the token usage the upstream reports
//! ([`crate::meter`]) and settles the request's reservation with it.
//!
//! One gRPC stream per HTTP request. The reservation is `reservation` in the
//! ext_authz filter's dynamic metadata (namespace
//! `envoy.filters.http.ext_authz`, forwarded by Envoy's
//! `metadata_options.forwarding_namespaces`); Envoy 1.40 sends it with every
//! message. The settlement is given that whole namespace (its string fields:
//! the reservation, budgets, caller, model...), so any replica can settle. A stream without one is closed at its first message, which makes
//! Envoy send nothing more for that request. A stream with one is settled
//! exactly once: when the body ends, or, when the gRPC stream ends or fails
//! first (the client went away, the upstream reset), as cut.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse, processing_request};
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::{Request, Response, Status, Streaming};

use crate::meter::{Meter, Metered};

/// The namespace the reservation is read from: ext_authz's dynamic metadata.
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The field of that namespace holding the reservation.
pub const RESERVATION_FIELD: &str = "reservation";
/// The longest reservation accepted.
const MAX_RESERVATION_BYTES: usize = 128;
/// The most metadata fields kept, and the longest value.
const MAX_FIELDS: usize = 64;
const MAX_VALUE_BYTES: usize = 4096;

/// The string fields of the request's ext_authz metadata; `reservation` is
/// always among them.
pub type Attribution = HashMap<String, String>;

/// Where a metered response goes: once per request that had a reservation.
/// `status` is the upstream's HTTP status (0 if its headers never came).
#[async_trait::async_trait]
pub trait Settle: Send + Sync + 'static {
    async fn settle(&self, attribution: &Attribution, status: u16, metered: Metered);
}

/// The reservation an attribution is for.
pub fn reservation(attribution: &Attribution) -> &str {
    attribution.get(RESERVATION_FIELD).map_or("", String::as_str)
}

/// Logs each settlement and counts it (`gatehouse_usage_settlements_total`
/// by outcome); no ledger.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSettle;

#[async_trait::async_trait]
impl Settle for LogSettle {
    async fn settle(&self, attribution: &Attribution, status: u16, metered: Metered) {
        use crate::telemetry::{VALUE_CAP, escape};
        let outcome = metered.outcome();
        metrics::counter!("gatehouse_usage_settlements_total", "outcome" => outcome).increment(1);
        let reservation = escape(reservation(attribution), VALUE_CAP);
        let usage = match metered {
            Metered::Usage(u) => u,
            Metered::Unmeasured(_) => Default::default(),
        };
        tracing::debug!(
            reservation = %reservation,
            status,
            outcome,
            prompt = usage.prompt_tokens,
            completion = usage.completion_tokens,
            "settled"
        );
    }
}

#[derive(Clone)]
pub struct ExtProc {
    settle: Arc<dyn Settle>,
}

impl ExtProc {
    pub fn new(settle: Arc<dyn Settle>) -> Self {
        ExtProc { settle }
    }

    pub fn into_server(self) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(self)
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = tokio_stream::wrappers::ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        // In observability mode nothing is sent: the sender is held while the
        // stream is read, and dropping it closes the stream (cleanly), which
        // tells Envoy to send nothing more for this request. A proxy that
        // waits for answers (not in observability mode) is told to go on,
        // unchanged, after each message.
        let (open, answers) = tokio::sync::mpsc::channel(4);
        let settle = self.settle.clone();
        // A task of its own, so a stream Envoy resets (its client went away)
        // is still settled: the response side would be dropped with it.
        tokio::spawn(async move {
            meter_stream(inbound, settle.as_ref(), &open).await;
            drop(open);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(answers)))
    }
}

/// Reads one stream to its end, or until nothing more is needed.
async fn meter_stream(
    mut inbound: Streaming<ProcessingRequest>,
    settle: &dyn Settle,
    answers: &tokio::sync::mpsc::Sender<Result<ProcessingResponse, Status>>,
) {
    let mut exchange = Exchange::default();
    loop {
        let step = match inbound.message().await {
            Ok(Some(message)) => {
                if let Some(answer) = go_on(&message) {
                    // The proxy waits for this; a closed stream means it left.
                    let _ = answers.send(Ok(answer)).await;
                }
                exchange.on_message(message)
            }
            Ok(None) => exchange.on_end("ended"),
            Err(e) => {
                tracing::debug!(code = ?e.code(), "ext_proc stream failed");
                exchange.on_end("failed")
            }
        };
        match step {
            Step::More => {}
            Step::Done => break,
            Step::Settle(attribution, status, metered) => {
                settle.settle(&attribution, status, metered).await;
                break;
            }
        }
    }
}

/// "Continue, unchanged" for a message the proxy waits on (not in
/// observability mode); `None` in observability mode.
fn go_on(message: &ProcessingRequest) -> Option<ProcessingResponse> {
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        BodyResponse, HeadersResponse, TrailersResponse, processing_response::Response as A,
    };
    use processing_request::Request as R;
    if message.observability_mode {
        return None;
    }
    let answer = match message.request.as_ref()? {
        R::RequestHeaders(_) => A::RequestHeaders(HeadersResponse::default()),
        R::ResponseHeaders(_) => A::ResponseHeaders(HeadersResponse::default()),
        R::RequestBody(_) => A::RequestBody(BodyResponse::default()),
        R::ResponseBody(_) => A::ResponseBody(BodyResponse::default()),
        R::RequestTrailers(_) => A::RequestTrailers(TrailersResponse::default()),
        R::ResponseTrailers(_) => A::ResponseTrailers(TrailersResponse::default()),
    };
    Some(ProcessingResponse { response: Some(answer), ..Default::default() })
}

/// What to do after a message.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    /// Nothing (more) to do: close the stream.
    Done,
    /// Settle, then close the stream.
    Settle(Attribution, u16, Metered),
}

/// One request's metering: the reservation, the status, the meter.
#[derive(Debug, Default)]
struct Exchange {
    messages: u64,
    /// The request's metadata, once it showed a reservation.
    reservation: Option<Attribution>,
    status: u16,
    meter: Option<Meter>,
}

impl Exchange {
    fn on_message(&mut self, message: ProcessingRequest) -> Step {
        use processing_request::Request as R;
        self.messages += 1;
        if self.reservation.is_none() {
            self.reservation = attribution(&message);
            // ext_authz decided before anything of the response existed:
            // the first message sees the metadata as it will stay.
            if self.reservation.is_none() {
                return Step::Done;
            }
        }
        match message.request {
            Some(R::ResponseHeaders(headers)) => {
                let map = headers.headers.as_ref();
                self.status = header(map, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
                self.meter = Some(Meter::for_response(header(map, "content-type"), header(map, "content-encoding")));
                if headers.end_of_stream {
                    return self.settle(true);
                }
            }
            Some(R::ResponseBody(body)) => {
                self.meter.get_or_insert_with(|| Meter::new(None)).feed(&body.body);
                if body.end_of_stream {
                    return self.settle(true);
                }
            }
            // Trailers end the body.
            Some(R::ResponseTrailers(_)) => return self.settle(true),
            Some(R::RequestHeaders(_) | R::RequestBody(_) | R::RequestTrailers(_)) | None => {}
        }
        Step::More
    }

    /// The stream ended (or failed) before the body did.
    fn on_end(&mut self, how: &'static str) -> Step {
        if self.reservation.is_none() {
            return Step::Done;
        }
        tracing::debug!(how, messages = self.messages, "ext_proc stream ended before the response body");
        self.settle(false)
    }

    fn settle(&mut self, end_of_stream: bool) -> Step {
        let metered = match self.meter.take() {
            Some(meter) => meter.finish(end_of_stream),
            None if end_of_stream => Metered::Unmeasured("no_usage"),
            None => Metered::Unmeasured("cut"),
        };
        match self.reservation.take() {
            Some(reservation) => {
                tracing::debug!(messages = self.messages, outcome = metered.outcome(), "ext_proc stream metered");
                Step::Settle(reservation, self.status, metered)
            }
            None => Step::Done,
        }
    }
}

/// The forwarded ext_authz metadata, when it holds a reservation.
fn attribution(message: &ProcessingRequest) -> Option<Attribution> {
    let namespace = message.metadata_context.as_ref()?.filter_metadata.get(METADATA_NAMESPACE)?;
    match &namespace.fields.get(RESERVATION_FIELD)?.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() && s.len() <= MAX_RESERVATION_BYTES => {}
        Some(_) => {
            tracing::warn!("the reservation in the ext_authz metadata is not a short string: not metered");
            return None;
        }
        None => return None,
    }
    let strings = namespace.fields.iter().filter_map(|(k, v)| match &v.kind {
        Some(Kind::StringValue(s)) if s.len() <= MAX_VALUE_BYTES => Some((k.clone(), s.clone())),
        _ => None,
    });
    let mut attribution: Attribution = strings.take(MAX_FIELDS).collect();
    if let Some(Kind::StringValue(r)) = &namespace.fields[RESERVATION_FIELD].kind {
        attribution.insert(RESERVATION_FIELD.to_owned(), r.clone());
    }
    Some(attribution)
}

fn header<'a>(map: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let h = map?.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name))?;
    if h.raw_value.is_empty() { Some(h.value.as_str()) } else { std::str::from_utf8(&h.raw_value).ok() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly by design")]
mod tests {
    use super::*;
    use crate::meter::Usage;
    use envoy_types::pb::envoy::config::core::v3::{HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, HttpTrailers};
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use processing_request::Request as R;

    fn string(s: &str) -> Value {
        Value { kind: Some(Kind::StringValue(s.to_owned())) }
    }

    fn with_reservation(reservation: Option<&str>, request: R) -> ProcessingRequest {
        let metadata_context = reservation.map(|r| {
            let fields = [
                (RESERVATION_FIELD.to_owned(), string(r)),
                ("user_id".to_owned(), string("u1")),
                ("budgets".to_owned(), string("key:k1")),
                ("n".to_owned(), Value { kind: Some(Kind::NumberValue(1.0)) }),
            ];
            let namespace = Struct { fields: fields.into_iter().collect() };
            Metadata {
                filter_metadata: [(METADATA_NAMESPACE.to_owned(), namespace)].into_iter().collect(),
                ..Default::default()
            }
        });
        ProcessingRequest { metadata_context, request: Some(request), observability_mode: true, ..Default::default() }
    }

    fn headers(status: &str, content_type: &str, end_of_stream: bool) -> R {
        let header =
            |k: &str, v: &str| HeaderValue { key: k.into(), raw_value: v.as_bytes().to_vec(), ..Default::default() };
        R::ResponseHeaders(HttpHeaders {
            headers: Some(HeaderMap { headers: vec![header(":status", status), header("content-type", content_type)] }),
            end_of_stream,
            ..Default::default()
        })
    }

    fn body(bytes: &str, end_of_stream: bool) -> R {
        R::ResponseBody(HttpBody { body: bytes.as_bytes().to_vec(), end_of_stream, ..Default::default() })
    }

    const USAGE: &str = r#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;

    /// What the settlement is given: every string field.
    fn r1() -> Attribution {
        [("reservation", "r1"), ("user_id", "u1"), ("budgets", "key:k1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn usage() -> Metered {
        Metered::Usage(Usage { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 })
    }

    #[test]
    fn settles_at_the_end_of_the_body() {
        let mut x = Exchange::default();
        assert_eq!(x.on_message(with_reservation(Some("r1"), headers("200", "application/json", false))), Step::More);
        assert_eq!(x.on_message(with_reservation(Some("r1"), body(&USAGE[..10], false))), Step::More);
        assert_eq!(
            x.on_message(with_reservation(Some("r1"), body(&USAGE[10..], true))),
            Step::Settle(r1(), 200, usage())
        );
        // Never twice.
        assert_eq!(x.on_end("ended"), Step::Done);
    }

    #[test]
    fn metadata_on_the_first_message_only_is_enough() {
        let mut x = Exchange::default();
        assert_eq!(x.on_message(with_reservation(Some("r1"), headers("200", "application/json", false))), Step::More);
        assert_eq!(x.on_message(with_reservation(None, body(USAGE, false))), Step::More);
        assert_eq!(x.on_message(with_reservation(None, body("", true))), Step::Settle(r1(), 200, usage()));
    }

    #[test]
    fn without_a_reservation_the_stream_is_closed_at_once() {
        let mut x = Exchange::default();
        assert_eq!(x.on_message(with_reservation(None, headers("200", "application/json", false))), Step::Done);
        assert_eq!(x.on_end("ended"), Step::Done);
        let mut x = Exchange::default();
        assert_eq!(x.on_message(with_reservation(Some(""), headers("200", "application/json", false))), Step::Done);
        let mut x = Exchange::default();
        let long = "r".repeat(MAX_RESERVATION_BYTES + 1);
        assert_eq!(x.on_message(with_reservation(Some(&long), headers("200", "application/json", false))), Step::Done);
    }

    #[test]
    fn a_stream_that_ends_early_is_settled_as_cut() {
        let mut x = Exchange::default();
        x.on_message(with_reservation(Some("r1"), headers("200", "text/event-stream", false)));
        x.on_message(with_reservation(Some("r1"), body("data: {\"choices\":[]}\n\n", false)));
        assert_eq!(x.on_end("failed"), Step::Settle(r1(), 200, Metered::Unmeasured("cut")));
        assert_eq!(x.on_end("ended"), Step::Done);
        // A usage already read counts.
        let mut x = Exchange::default();
        x.on_message(with_reservation(Some("r1"), headers("200", "text/event-stream", false)));
        x.on_message(with_reservation(Some("r1"), body(&format!("data: {USAGE}\n\n"), false)));
        assert_eq!(x.on_end("ended"), Step::Settle(r1(), 200, usage()));
    }

    #[test]
    fn bodiless_responses_and_trailers_end_the_response() {
        let mut x = Exchange::default();
        assert_eq!(
            x.on_message(with_reservation(Some("r1"), headers("204", "application/json", true))),
            Step::Settle(r1(), 204, Metered::Unmeasured("no_usage"))
        );
        let mut x = Exchange::default();
        x.on_message(with_reservation(Some("r1"), headers("200", "application/json", false)));
        x.on_message(with_reservation(Some("r1"), body(USAGE, false)));
        let trailers = R::ResponseTrailers(HttpTrailers::default());
        assert_eq!(x.on_message(with_reservation(Some("r1"), trailers)), Step::Settle(r1(), 200, usage()));
    }
}
