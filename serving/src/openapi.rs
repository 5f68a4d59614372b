//! The OpenAPI 3.1 document of the REST face ([`crate::rest`]), served at `/openapi.json`.
//!
//! The schemas are not written by hand: they are derived from the compiled `.proto` files
//! ([`parkcast_proto::FILE_DESCRIPTOR_SET`], with their comments as descriptions) by the rules of
//! the protobuf JSON mapping the answers are written in, so the document cannot drift from the
//! messages. The paths are [`crate::rest::ROUTES`].

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet, SourceCodeInfo};
use serde_json::{Map, Value, json};

use crate::rest::{ROUTES, Route};

/// The proto package the REST face answers in.
const PACKAGE: &str = "parkcast.v1";

/// The document, built once.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The OpenAPI document: the routes, and a schema per message and enum of `parkcast.v1`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in &ROUTES {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_ascii_lowercase(), operation(route));
        }
    }
    let mut schemas = message_schemas();
    schemas.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "description": "A refusal: the gRPC status the same request gets.",
            "properties": {
                "code": {"type": "integer", "description": "The google.rpc.Code number (3: INVALID_ARGUMENT)."},
                "status": {"type": "string", "description": "The code's name, e.g. INVALID_ARGUMENT."},
                "message": {"type": "string", "description": "What is wrong: the gRPC status message."}
            },
            "required": ["code", "status", "message"]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "parkcast",
            "version": "1",
            "description": "The parkcast server's REST/JSON face: the answers, request checks and errors of its gRPC services (parkcast.v1.Availability, parkcast.v1.Models) in the protobuf JSON mapping of the same messages: lowerCamelCase names, 64-bit integers as strings, enums by name, every field written. Query parameters take the request message's proto or JSON field names; a repeated one may be given several times or comma-separated."
        },
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
                "description": format!("The request's `{name}`.")
            })
        })
        .collect();
    parameters.extend(route.query.iter().map(|name| {
        json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": format!("The request's `{name}` (see {} in the schemas).", route.request),
            "explode": true
        })
    }));
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        })
    };
    let answer = json!({"$ref": format!("#/components/schemas/{}", route.response)});
    let success = if route.events {
        json!({
            "description": format!("A stream of server-sent events: `event: availability` with a {} as JSON data, at first and on every change; `event: error` with an Error if the stream ends in one.", route.response),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-event-data": answer}}
        })
    } else {
        json!({"description": "The answer.", "content": {"application/json": {"schema": answer}}})
    };
    let mut operation = json!({
        "operationId": route.rpc.rsplit('.').next().unwrap_or(route.rpc),
        "summary": route.summary,
        "description": format!("gRPC: `{}` with a `{}`.", route.rpc, route.request),
        "parameters": parameters,
        "responses": {
            "200": success,
            "400": error("INVALID_ARGUMENT or FAILED_PRECONDITION: the message says what is wrong."),
            "404": error("NOT_FOUND: no such lot or model version."),
            "503": error("UNAVAILABLE: the server is starting or cannot answer now.")
        }
    });
    if route.method == "POST"
        && let Value::Object(fields) = &mut operation
    {
        fields.insert(
            "requestBody".to_owned(),
            json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", route.request)}}}
            }),
        );
    }
    operation
}

/// A schema per message and enum of [`PACKAGE`], by its short name.
fn message_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    let Ok(set) = FileDescriptorSet::decode(parkcast_proto::FILE_DESCRIPTOR_SET) else {
        return schemas;
    };
    for file in set.file.iter().filter(|file| file.package() == PACKAGE) {
        let comments = Comments::of(file.source_code_info.as_ref());
        for (index, message) in file.message_type.iter().enumerate() {
            add_message(&mut schemas, "", message, &[4, index as i32], &comments);
        }
        for (index, enumeration) in file.enum_type.iter().enumerate() {
            let path = [5, index as i32];
            schemas.insert(
                enumeration.name().to_owned(),
                enum_schema(enumeration, &path, &comments),
            );
        }
    }
    schemas
}

/// A message's schema and those of the types nested in it, named `Outer.Inner` as the package
/// scopes them.
fn add_message(
    schemas: &mut Map<String, Value>,
    scope: &str,
    message: &DescriptorProto,
    path: &[i32],
    comments: &Comments,
) {
    let name = format!("{scope}{}", message.name());
    schemas.insert(name.clone(), message_schema(message, path, comments));
    let scope = format!("{name}.");
    for (index, nested) in message.nested_type.iter().enumerate() {
        let mut nested_path = path.to_vec();
        nested_path.extend([3, index as i32]);
        add_message(schemas, &scope, nested, &nested_path, comments);
    }
    for (index, enumeration) in message.enum_type.iter().enumerate() {
        let mut enum_path = path.to_vec();
        enum_path.extend([4, index as i32]);
        schemas.insert(
            format!("{scope}{}", enumeration.name()),
            enum_schema(enumeration, &enum_path, comments),
        );
    }
}

fn message_schema(message: &DescriptorProto, path: &[i32], comments: &Comments) -> Value {
    let mut properties = Map::new();
    for (index, field) in message.field.iter().enumerate() {
        let mut field_path = path.to_vec();
        field_path.extend([2, index as i32]);
        let mut schema = match field.r#type() {
            Type::Double | Type::Float => json!({"type": "number"}),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Type::Uint64 | Type::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Type::Uint32 | Type::Fixed32 => {
                json!({"type": "integer", "format": "uint32", "minimum": 0})
            }
            Type::Bool => json!({"type": "boolean"}),
            Type::String => json!({"type": "string"}),
            Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Type::Enum | Type::Message | Type::Group => {
                let name = field
                    .type_name()
                    .strip_prefix(&format!(".{PACKAGE}."))
                    .unwrap_or_else(|| field.type_name());
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
        };
        if field.label() == Label::Repeated {
            schema = json!({"type": "array", "items": schema});
        } else if field.proto3_optional() {
            schema = json!({"oneOf": [schema, {"type": "null"}]});
        }
        if let (Some(text), Value::Object(fields)) = (comments.at(&field_path), &mut schema) {
            fields.insert("description".to_owned(), Value::String(text));
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if let (Some(text), Value::Object(fields)) = (comments.at(path), &mut schema) {
        fields.insert("description".to_owned(), Value::String(text));
    }
    schema
}

fn enum_schema(enumeration: &EnumDescriptorProto, path: &[i32], comments: &Comments) -> Value {
    let names: Vec<&str> = enumeration.value.iter().map(|value| value.name()).collect();
    let mut schema = json!({"type": "string", "enum": names});
    if let (Some(text), Value::Object(fields)) = (comments.at(path), &mut schema) {
        fields.insert("description".to_owned(), Value::String(text));
    }
    schema
}

/// A file's leading comments by descriptor path.
struct Comments(BTreeMap<Vec<i32>, String>);

impl Comments {
    fn of(info: Option<&SourceCodeInfo>) -> Self {
        let mut comments = BTreeMap::new();
        for location in info
            .map(|info| info.location.as_slice())
            .unwrap_or_default()
        {
            let text = location
                .leading_comments()
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_owned();
            if !text.is_empty() {
                comments.insert(location.path.clone(), text);
            }
        }
        Comments(comments)
    }

    fn at(&self, path: &[i32]) -> Option<String> {
        self.0.get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_has_its_json_names_and_comments() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        let answer = &schemas["LotAvailability"];
        assert_eq!(answer["properties"]["asOfMs"]["type"], "string");
        assert_eq!(answer["properties"]["forecasts"]["type"], "array");
        assert_eq!(
            answer["properties"]["forecasts"]["items"]["$ref"],
            "#/components/schemas/Forecast"
        );
        assert!(
            answer["properties"]["stale"]["description"]
                .as_str()
                .is_some_and(|text| text.contains("too old")),
            "{}",
            answer["properties"]["stale"]
        );
        assert_eq!(
            schemas["SlotType"]["enum"][2],
            Value::String("SLOT_TYPE_EV".to_owned())
        );
        // Every reference resolves.
        let text = document.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                schemas.get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
        for route in ROUTES {
            let method = route.method.to_ascii_lowercase();
            assert!(
                document["paths"][route.path][&method].is_object(),
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
