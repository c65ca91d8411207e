//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{customers, dead_letters, error, ops, orders, products, reviews};

#[derive(OpenApi)]
#[openapi(
    info(title = "orderly", description = "A concurrency-safe order processing engine."),
    paths(
        customers::create_customer, customers::get_customer, customers::deposit,
        products::list_products, products::get_product, products::create_product,
        products::update_product, products::delete_product, products::adjust_stock,
        reviews::create_review, reviews::list_reviews,
        orders::place_order, orders::get_order, orders::list_orders, orders::cancel_order,
        orders::order_history, orders::get_saga, orders::search_sagas,
        dead_letters::list_dead_letters, dead_letters::get_dead_letter,
        dead_letters::replay_dead_letter, dead_letters::purge_dead_letter,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::dashboard,
    ),
    components(schemas(error::Problem, error::ProblemField)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The endpoints of `doc` as a Markdown table: method, path, whether it takes a bearer token,
/// its success statuses (every operation may also answer the problems of [`super::error`]) and
/// what it does. `docs/api.md` carries it, checked by the test below.
pub fn endpoint_table(doc: &utoipa::openapi::OpenApi) -> String {
    use std::fmt::Write;

    let mut table =
        String::from("| method | path | auth | success | what it does |\n|---|---|---|---|---|\n");
    for (path, item) in &doc.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else {
                continue;
            };
            let auth = if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                "bearer"
            } else {
                "–"
            };
            let answers: Vec<&str> = operation
                .responses
                .responses
                .keys()
                .map(String::as_str)
                .filter(|status| status.starts_with(['2', '3']))
                .collect();
            // utoipa splits a handler's doc comment into its first line and the rest: the
            // table shows its first sentence.
            let text = [&operation.summary, &operation.description]
                .into_iter()
                .flatten()
                .map(|t| t.replace('\n', " "))
                .collect::<Vec<_>>()
                .join(" ");
            let summary = match text.find(". ") {
                Some(end) => &text[..=end],
                None => text.trim_end(),
            }
            .replace('|', "\\|");
            let _ = writeln!(
                table,
                "| `{method}` | `{path}` | {auth} | {} | {summary} |",
                answers.join(", ")
            );
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/api.md` lists every endpoint as this document does, so the two cannot drift apart.
    /// After changing an endpoint: `ORDERLY_BLESS=1 cargo test --lib endpoint_table` rewrites it.
    #[test]
    fn docs_api_md_carries_the_endpoint_table() {
        // Read where cargo runs the test, not where it was compiled: a test binary built in
        // another checkout of the same sources is reused, with that checkout's path in it.
        let root = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let path = format!("{root}/docs/api.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (start, end) = ("<!-- endpoints:start -->\n", "<!-- endpoints:end -->");
        let from = doc
            .find(start)
            .expect("docs/api.md has an endpoints:start marker")
            + start.len();
        let to = doc
            .find(end)
            .expect("docs/api.md has an endpoints:end marker");
        let table = endpoint_table(&ApiDoc::openapi());
        if std::env::var_os("ORDERLY_BLESS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &doc[..from], &doc[to..])).unwrap();
            return;
        }
        assert_eq!(
            doc[from..to],
            table,
            "docs/api.md's endpoint table is stale; rewrite it with ORDERLY_BLESS=1 cargo test --lib endpoint_table"
        );
    }
}
