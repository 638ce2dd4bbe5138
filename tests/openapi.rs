//! `docs/openapi.yaml` against the real server: every operation in the spec
//! is sent (with its example body) and must answer a status the spec
//! documents for it, from a route that exists, with a body that has the
//! documented schema's required fields.

use serde_json::{json, Value};

mod common;
use common::server::{temp_dir, Server};

/// Follows a local `$ref` ("#/components/...") to its target.
fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let target = reference
                .trim_start_matches("#/")
                .split('/')
                .fold(spec, |at, key| &at[key]);
            resolve(spec, target)
        }
        None => node,
    }
}

/// Replaces the placeholder "{sku}" anywhere in an example body.
fn fill(example: &Value, sku: &str) -> Value {
    match example {
        Value::String(s) if s == "{sku}" => Value::from(sku),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, sku)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, sku))).collect())
        }
        other => other.clone(),
    }
}

/// The spec's error codes are exactly the server's (`Code::ALL`): a code
/// added to one and not the other fails here, not in a schemathesis run.
#[test]
fn the_spec_lists_every_error_code_the_server_answers() {
    let spec: Value =
        serde_yaml_ng::from_str(include_str!("../docs/openapi.yaml")).expect("openapi.yaml parses");
    let listed = &spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
    let mut listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut served: Vec<&str> = hotstock::server::error::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    listed.sort_unstable();
    served.sort_unstable();
    assert_eq!(listed, served);
}

#[test]
fn every_operation_in_the_spec_answers_as_the_spec_says() {
    let spec: Value =
        serde_yaml_ng::from_str(include_str!("../docs/openapi.yaml")).expect("openapi.yaml parses");
    let dir = temp_dir("openapi");
    let server = Server::start(&dir);
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/skus/demo",
                Some(&json!({"available": 1000})),
                &[]
            )
            .0,
        200
    );
    // A fresh reservation for each operation that needs one, in the state
    // its transition starts from.
    // (Each with its own customer: the spec's PUT example sets a limit.)
    let fixtures = std::cell::Cell::new(0);
    let reservation = |confirm: bool| {
        fixtures.set(fixtures.get() + 1);
        let customer = format!("fixture-{}", fixtures.get());
        let body = json!({"lines": [{"sku": "demo", "quantity": 1}], "confirm": confirm, "customer": customer});
        let (status, doc) = server.call("POST", "/v1/reservations", Some(&body), &[]);
        assert_eq!(status, 201);
        doc["id"].as_str().unwrap().to_owned()
    };

    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            operations += 1;
            let mut concrete = path.replace("{sku}", "demo").replace("{kit}", "demo-kit");
            if concrete.contains("{id}") {
                concrete = concrete.replace("{id}", &reservation(path.ends_with("/refund")));
            }
            let body = operation.get("x-hotstock-example").map(|e| fill(e, "demo"));
            let (status, answer) = if concrete.ends_with("/stream") {
                stream_head(&server, &concrete, &spec, operation)
            } else {
                server.call(&method.to_uppercase(), &concrete, body.as_ref(), &[])
            };
            let name = format!("{} {path}", method.to_uppercase());
            let documented = &operation["responses"][status.to_string()];
            assert!(
                !documented.is_null(),
                "{name} answered {status}, which the spec does not document: {answer}"
            );
            assert!(
                !matches!(
                    answer["error"].as_str(),
                    Some("not_found" | "method_not_allowed")
                ),
                "{name} is in the spec but the server has no such route: {answer}"
            );
            let response = resolve(&spec, documented);
            let Some(schema) = response["content"]
                .get("application/json")
                .map(|c| resolve(&spec, &c["schema"]))
            else {
                continue;
            };
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                assert!(
                    answer.get(field).is_some(),
                    "{name} ({status}) lacks required field {field:?}: {answer}"
                );
            }
        }
    }
    // Every route the server serves (`Route::ALL`, less "other").
    assert_eq!(
        operations,
        hotstock::server::route::Route::ALL.len() - 1,
        "the spec documents every route the server serves"
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An endless response: only its head is read (the status, and that its
/// content type is the one the spec documents for it).
fn stream_head(server: &Server, path: &str, spec: &Value, operation: &Value) -> (u16, Value) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut content_type = String::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-type:") {
            content_type = value.trim().to_owned();
        }
    }
    let documented = resolve(spec, &operation["responses"][status.to_string()]);
    assert!(
        documented["content"].get(&content_type).is_some(),
        "GET {path}: content type {content_type} is not the documented one"
    );
    // Not JSON: no required fields to check.
    (status, Value::Null)
}
