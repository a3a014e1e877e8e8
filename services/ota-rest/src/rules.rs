//! `POST /api/v1/rules/{validate,explain,preview}`: CEL targeting for
//! engineers. A body gives either one `expression` (checked as a target) or a
//! whole rule set (`target` plus ordered `rules`).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use ota_auth::Role;
use ota_common::CodedError;
use ota_proto::v1 as pb;
use ota_rule_engine::{Explanation, ExpressionError, Preview, RuleSet};
use serde::{Deserialize, Serialize};

use crate::{Caller, RestError, RestState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    /// Shorthand for a rule set with only this target.
    expression: Option<String>,
    target: Option<String>,
    #[serde(default)]
    rules: Vec<ota_rule_engine::Rule>,
    /// Explain: the vehicle.
    vin: Option<String>,
    /// Preview: how many matching VINs to list.
    sample_size: Option<u32>,
}

impl RulesBody {
    fn rule_set(&self) -> Result<RuleSet, RestError> {
        match (&self.expression, &self.target) {
            (Some(e), None) if self.rules.is_empty() => Ok(RuleSet {
                target: e.clone(),
                rules: Vec::new(),
            }),
            (None, Some(t)) => Ok(RuleSet {
                target: t.clone(),
                rules: self.rules.clone(),
            }),
            _ => Err(RestError::Invalid(
                "give either \"expression\" or \"target\" (with optional \"rules\")".into(),
            )),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<ExpressionError>,
}

type Body = Result<Json<RulesBody>, axum::extract::rejection::JsonRejection>;

async fn check(s: &RestState, rules: &RuleSet) -> Result<Validation, RestError> {
    let r = s
        .rules
        .clone()
        .validate(pb::ValidateRequest {
            rules: Some(rules.clone().into()),
        })
        .await?
        .into_inner();
    Ok(Validation {
        valid: r.valid,
        errors: r.errors.into_iter().map(Into::into).collect(),
    })
}

/// The rule set, if it validates; otherwise a 400 listing every error.
async fn require_valid(s: &RestState, rules: RuleSet) -> Result<RuleSet, RestError> {
    let v = check(s, &rules).await?;
    if v.valid {
        Ok(rules)
    } else {
        Err(RestError::InvalidRules(v.errors))
    }
}

pub async fn validate(
    caller: Caller,
    State(s): State<RestState>,
    body: Body,
) -> Result<Response, RestError> {
    caller.require(Role::Viewer)?;
    let Json(body) = body?;
    let v = check(&s, &body.rule_set()?).await?;
    Ok(Json(v).into_response())
}

pub async fn explain(
    caller: Caller,
    State(s): State<RestState>,
    body: Body,
) -> Result<Response, RestError> {
    caller.require(Role::Viewer)?;
    let Json(body) = body?;
    let vin = body
        .vin
        .clone()
        .ok_or_else(|| RestError::Invalid("explain needs a \"vin\"".into()))?;
    let rules = require_valid(&s, body.rule_set()?).await?;
    let r = s
        .rules
        .clone()
        .explain(pb::ExplainRequest {
            rules: Some(rules.into()),
            vin,
        })
        .await?
        .into_inner();
    Ok(Json(Explanation::from(r)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Stream NDJSON: `{"scanned","total"}` lines, then `{"result": ...}`.
    #[serde(default)]
    progress: bool,
}

pub async fn preview(
    caller: Caller,
    State(s): State<RestState>,
    Query(q): Query<PreviewQuery>,
    body: Body,
) -> Result<Response, RestError> {
    // A preview scans the whole inventory: an engineer's tool.
    caller.require(Role::Engineer)?;
    let Json(body) = body?;
    let rules = require_valid(&s, body.rule_set()?).await?;
    let req = pb::PreviewRequest {
        rules: Some(rules.into()),
        sample_size: body.sample_size.unwrap_or(0),
    };
    if !q.progress {
        let r = s.rules.clone().preview(req).await?.into_inner();
        return Ok(Json(Preview::from(r)).into_response());
    }
    let stream = s.rules.clone().preview_stream(req).await?.into_inner();
    let lines = stream.map(|m| {
        let line = match m {
            Ok(pb::PreviewProgress {
                result: Some(r), ..
            }) => {
                serde_json::json!({"result": Preview::from(r)})
            }
            Ok(p) => serde_json::json!({"scanned": p.scanned, "total": p.total}),
            Err(status) => {
                let e = RestError::Upstream(status);
                serde_json::json!({"error": {"code": e.code().as_str(), "message": e.to_string()}})
            }
        };
        Ok::<_, std::convert::Infallible>(format!("{line}\n"))
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}
