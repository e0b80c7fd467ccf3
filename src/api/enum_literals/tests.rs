use async_graphql::parser::parse_query;

use super::*;

const SDL: &str = r#"
type Key { id: ID! role: Role! owner: Account }
type Account { keys(role: Role, roles: [[Role!]]): [Key!]! name: String! }
enum Role { ADMIN HOST VIEWER }
input KeyInput { name: String! role: Role! scope: ScopeInput }
input ScopeInput { roles: [Role!]! note: String }
interface Node { id: ID! }
type Query { key(id: ID!): Key account(name: String): Account keysFor(roles: [Role!]!): [Key!]! node(id: ID!): Node }
type Mutation {
  createKey(name: String!, role: Role!): Key!
  createKeys(input: [KeyInput!]!): [Key!]!
}
schema { query: Query mutation: Mutation }
"#;

fn verdict(document: &str) -> Result<(), String> {
    let doc = parse_query(document).expect("the test documents parse");
    EnumArgs::from_sdl(SDL).check(&doc)
}

#[test]
fn a_string_for_an_enum_argument_is_refused_with_the_enum_value_to_write() {
    let said = verdict(r#"mutation { createKey(name: "ci", role: "ADMIN") { id } }"#).unwrap_err();
    assert_eq!(
        said,
        r#"argument `role` of `Mutation.createKey` takes an enum value: write ADMIN, not "ADMIN""#
    );
}

#[test]
fn strings_inside_list_literals_are_refused() {
    let said = verdict(r#"{ keysFor(roles: [ADMIN, "HOST"]) { id } }"#).unwrap_err();
    assert_eq!(
        said,
        r#"argument `roles` of `Query.keysFor` takes an enum value: write HOST, not "HOST""#
    );
    // A single value where a list is expected is coerced to a list of one: still a literal.
    assert!(verdict(r#"{ keysFor(roles: "HOST") { id } }"#).is_err());
    // Lists of lists, on a nested field.
    let said = verdict(r#"{ account { keys(roles: [[VIEWER], ["ADMIN"]]) { id } } }"#).unwrap_err();
    assert!(said.starts_with("argument `roles` of `Account.keys`"), "{said}");
}

#[test]
fn strings_inside_input_object_literals_are_refused_with_the_path_to_them() {
    let direct = r#"mutation { createKeys(input: [{name: "a", role: ADMIN}, {name: "b", role: "HOST"}]) { id } }"#;
    let said = verdict(direct).unwrap_err();
    assert_eq!(
        said,
        r#"field `role` of `KeyInput` in argument `input` of `Mutation.createKeys` takes an enum value: write HOST, not "HOST""#
    );
    let nested = r#"mutation { createKeys(input: {name: "a", role: ADMIN, scope: {roles: ["VIEWER"], note: "VIEWER"}}) { id } }"#;
    let said = verdict(nested).unwrap_err();
    assert_eq!(
        said,
        "field `roles` of `ScopeInput` in field `scope` of `KeyInput` in argument `input` of `Mutation.createKeys` \
         takes an enum value: write VIEWER, not \"VIEWER\""
    );
}

#[test]
fn a_string_that_is_no_enum_name_gets_the_values_listed() {
    let said = verdict(r#"mutation { createKey(name: "ci", role: "admin user") { id } }"#).unwrap_err();
    assert!(
        said.ends_with("takes an enum value (one of ADMIN, HOST, VIEWER), not a string"),
        "{said}"
    );
}

#[test]
fn enum_literals_variables_and_strings_where_strings_belong_pass() {
    let ok = [
        r#"mutation { createKey(name: "ADMIN", role: ADMIN) { id role } }"#,
        "mutation M($r: Role!) { createKey(name: \"ci\", role: $r) { id } }",
        "query Q($r: Role) { keysFor(roles: [$r, HOST]) { id } account(name: \"HOST\") { keys(role: $r) { id } } }",
        r#"mutation { createKeys(input: [{name: "a", role: ADMIN, scope: {roles: [HOST], note: "HOST"}}]) { id } }"#,
        "mutation($i: [KeyInput!]!) { createKeys(input: $i) { id } }",
        "{ __typename __schema { types { name } } __type(name: \"Role\") { name } }",
    ];
    for doc in ok {
        assert_eq!(verdict(doc), Ok(()), "{doc}");
    }
}

#[test]
fn aliases_inline_fragments_and_fragments_are_followed_to_the_right_type() {
    let aliased = r#"mutation { mine: createKey(name: "x", role: "HOST") { id } }"#;
    assert!(verdict(aliased).unwrap_err().contains("`Mutation.createKey`"));
    // The fragment is checked on its type condition, wherever it is spread.
    let fragment = r#"query { account { ...Keys } } fragment Keys on Account { keys(role: "VIEWER") { id } }"#;
    assert!(
        verdict(fragment)
            .unwrap_err()
            .starts_with("argument `role` of `Account.keys`")
    );
    let inline = r#"query { node(id: "1") { ... on Account { keys(role: "VIEWER") { id } } } }"#;
    assert!(
        verdict(inline)
            .unwrap_err()
            .starts_with("argument `role` of `Account.keys`")
    );
    // Without a type condition an inline fragment keeps its parent's type.
    let bare = r#"query { account { ... @include(if: true) { keys(role: "VIEWER") { id } } } }"#;
    assert!(
        verdict(bare)
            .unwrap_err()
            .starts_with("argument `role` of `Account.keys`")
    );
    // A field's return type is followed through `!` and `[ ]`: Account.keys returns [Key!]!.
    let deep = r#"query { account { keys { owner { keys(role: "HOST") { id } } } } }"#;
    assert!(
        verdict(deep)
            .unwrap_err()
            .starts_with("argument `role` of `Account.keys`")
    );
}

#[test]
fn unknown_fields_arguments_and_types_are_left_to_validation() {
    let unknown = [
        r#"{ nothing(role: "ADMIN") { id } }"#,
        r#"{ key(id: "1", role: "ADMIN") { id } }"#,
        r#"{ ... on Nowhere { keysFor(roles: ["ADMIN"]) { id } } }"#,
        r#"mutation { createKeys(input: [{name: "a", rank: "ADMIN"}]) { id } }"#,
    ];
    for doc in unknown {
        assert_eq!(verdict(doc), Ok(()), "{doc}");
    }
}

#[test]
fn variable_defaults_are_literals_too() {
    let said = verdict(r#"query Q($r: [Role!] = ["HOST"]) { keysFor(roles: $r) { id } }"#).unwrap_err();
    assert_eq!(
        said,
        r#"the default value of variable `$r` takes an enum value: write HOST, not "HOST""#
    );
}

#[test]
fn the_first_literal_in_document_order_is_reported() {
    let doc = r#"query A { keysFor(roles: ["HOST"]) { id } } query B { keysFor(roles: ["ADMIN"]) { id } }
                 fragment F on Account { keys(role: "VIEWER") { id } }"#;
    for _ in 0..8 {
        assert!(verdict(doc).unwrap_err().contains("write HOST"));
    }
}

#[test]
fn root_names_come_from_the_schema_block() {
    let sdl = "enum Role { ADMIN } type Root { keys(role: Role): [String!]! } schema { query: Root }";
    let doc = parse_query(r#"{ keys(role: "ADMIN") }"#).unwrap();
    assert_eq!(
        EnumArgs::from_sdl(sdl).check(&doc).unwrap_err(),
        r#"argument `role` of `Root.keys` takes an enum value: write ADMIN, not "ADMIN""#
    );
}

#[test]
fn the_served_schema_is_read_and_checked() {
    // `schema.graphql` is exactly what the server serves (a test in `schema` keeps it so).
    let served = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"));
    let table = EnumArgs::from_sdl(served);
    let refused = parse_query(r#"mutation { createApiKey(name: "ci", role: "ADMIN") { key } }"#).unwrap();
    assert_eq!(
        table.check(&refused).unwrap_err(),
        r#"argument `role` of `Mutation.createApiKey` takes an enum value: write ADMIN, not "ADMIN""#
    );
    let fine = r#"mutation { createStage(broadcastId: "b", role: REPLICA) { id } } "#;
    assert_eq!(table.check(&parse_query(fine).unwrap()), Ok(()));
    let listed = parse_query(r#"{ broadcasts(state: "LIVE") { id } }"#).unwrap();
    assert!(table.check(&listed).unwrap_err().contains("`Query.broadcasts`"));
}

#[test]
fn an_sdl_that_does_not_parse_checks_nothing() {
    let doc = parse_query(r#"mutation { createKey(name: "ci", role: "ADMIN") { id } }"#).unwrap();
    assert_eq!(EnumArgs::from_sdl("type {").check(&doc), Ok(()));
}
