//! Enum arguments given as string literals. async-graphql accepts `createApiKey(role: "ADMIN")`
//! where GraphQL requires the enum value `role: ADMIN`; a client that works here would break on any
//! other server. Variables are JSON, where enums legitimately arrive as strings, so only literals
//! written in the document are refused: arguments, values inside list and input-object literals,
//! and variables' default values.
//!
//! Owns: the table of which arguments and input fields take an enum (built once from the served
//! SDL) and the walk of a parsed document against it. Does not validate: unknown fields, arguments
//! and types are skipped and left to async-graphql's validation, which reports them properly.
//! Directive arguments are not checked (the schema's directives take none of enum type).

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, FieldDefinition, OperationType, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::{Pos, Positioned};
use async_graphql_value::Value;

#[cfg(test)]
mod tests;

pub struct EnumArgs {
    /// Root type names for query, mutation and subscription.
    roots: [String; 3],
    /// Per output type (object or interface), per field: its named return type and its arguments.
    fields: HashMap<String, HashMap<String, FieldSig>>,
    /// Per input object, per field: its named type.
    inputs: HashMap<String, HashMap<String, String>>,
    /// Per enum: its values (to suggest in messages).
    enums: HashMap<String, Vec<String>>,
}

struct FieldSig {
    returns: String,
    /// Argument name → named type.
    args: HashMap<String, String>,
}

/// The named type under any `!` and `[ ]` wrapping.
fn named(ty: &Type) -> String {
    match &ty.base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(inner) => named(inner),
    }
}

/// Where a value sits, for the message: the argument (or variable) it belongs to and the input
/// fields, outermost first, that lead to it.
struct Place<'a> {
    what: &'a str,
    input_fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Place<'a> {
    fn new(what: &'a str) -> Self {
        Place {
            what,
            input_fields: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        let mut said = String::new();
        for (field, input) in self.input_fields.iter().rev() {
            said += &format!("field `{field}` of `{input}` in ");
        }
        said + self.what
    }
}

impl EnumArgs {
    /// Build the table from the SDL the server serves (`schema.sdl()`). An SDL that does not parse
    /// would be async-graphql's own output failing its own parser: the check is then off (logged),
    /// rather than the server refusing to start over a style rule. A test parses `schema.graphql`.
    pub fn from_sdl(sdl: &str) -> EnumArgs {
        let mut table = EnumArgs {
            roots: ["Query", "Mutation", "Subscription"].map(String::from),
            fields: HashMap::new(),
            inputs: HashMap::new(),
            enums: HashMap::new(),
        };
        let doc = match async_graphql::parser::parse_schema(sdl) {
            Ok(doc) => doc,
            Err(e) => {
                tracing::error!(error = %e, "the schema's SDL does not parse: enum literals are not checked");
                return table;
            }
        };
        for definition in doc.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    for (slot, root) in [schema.query, schema.mutation, schema.subscription]
                        .into_iter()
                        .enumerate()
                    {
                        if let Some(root) = root {
                            table.roots[slot] = root.node.to_string();
                        }
                    }
                }
                TypeSystemDefinition::Type(ty) => {
                    let ty = ty.node;
                    let name = ty.name.node.to_string();
                    match ty.kind {
                        TypeKind::Object(o) => table.add_fields(name, o.fields),
                        TypeKind::Interface(i) => table.add_fields(name, i.fields),
                        TypeKind::InputObject(input) => {
                            let fields = input
                                .fields
                                .iter()
                                .map(|f| (f.node.name.node.to_string(), named(&f.node.ty.node)));
                            table.inputs.entry(name).or_default().extend(fields);
                        }
                        TypeKind::Enum(e) => {
                            let values = e.values.iter().map(|v| v.node.value.node.to_string());
                            table.enums.entry(name).or_default().extend(values);
                        }
                        TypeKind::Scalar | TypeKind::Union(_) => {}
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        table
    }

    fn add_fields(&mut self, ty: String, fields: Vec<Positioned<FieldDefinition>>) {
        let sigs = self.fields.entry(ty).or_default();
        for field in fields {
            let field = field.node;
            let args = field
                .arguments
                .iter()
                .map(|a| (a.node.name.node.to_string(), named(&a.node.ty.node)));
            let sig = FieldSig {
                returns: named(&field.ty.node),
                args: args.collect(),
            };
            sigs.insert(field.name.node.to_string(), sig);
        }
    }

    /// The first string literal given where an enum is expected, as a client-facing message, e.g.
    /// "argument `role` of `Mutation.createApiKey` takes an enum value: write ADMIN, not \"ADMIN\"".
    /// Variables' default values come first, then operations and fragments in document order, so
    /// the answer does not depend on hash-map order.
    pub fn check(&self, doc: &ExecutableDocument) -> Result<(), String> {
        // Each fragment is checked once, on its own type condition, rather than at every spread.
        let mut sets: Vec<(Pos, &str, &SelectionSet)> = Vec::new();
        for (_, op) in doc.operations.iter() {
            let root = match op.node.ty {
                OperationType::Query => &self.roots[0],
                OperationType::Mutation => &self.roots[1],
                OperationType::Subscription => &self.roots[2],
            };
            sets.push((op.pos, root, &op.node.selection_set.node));
        }
        for f in doc.fragments.values() {
            sets.push((f.pos, &f.node.type_condition.node.on.node, &f.node.selection_set.node));
        }
        sets.sort_by_key(|(pos, _, _)| *pos);

        let mut variables: Vec<_> = doc
            .operations
            .iter()
            .flat_map(|(_, op)| &op.node.variable_definitions)
            .collect();
        variables.sort_by_key(|v| v.pos);
        for var in variables {
            if let Some(default) = &var.node.default_value {
                let what = format!("the default value of variable `${}`", var.node.name.node);
                let default = default.node.clone().into_value();
                self.value(&default, &named(&var.node.var_type.node), &mut Place::new(&what))?;
            }
        }
        for (_, ty, set) in sets {
            self.selections(ty, set)?;
        }
        Ok(())
    }

    /// Recursion follows the document's selection sets. Its depth is bounded because the front
    /// gate (`gate.rs`) refused anything nested deeper than `graphql_max_nesting` before parsing.
    fn selections(&self, parent: &str, set: &SelectionSet) -> Result<(), String> {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    // Unknown type or field (or `__typename`, `__schema`): validation's business.
                    let Some(sig) = self.fields.get(parent).and_then(|f| f.get(field.name.node.as_str())) else {
                        continue;
                    };
                    for (arg, value) in &field.arguments {
                        if let Some(ty) = sig.args.get(arg.node.as_str()) {
                            let what = format!("argument `{}` of `{parent}.{}`", arg.node, field.name.node);
                            self.value(&value.node, ty, &mut Place::new(&what))?;
                        }
                    }
                    self.selections(&sig.returns, &field.selection_set.node)?;
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let ty = inline
                        .type_condition
                        .as_ref()
                        .map_or(parent, |c| c.node.on.node.as_str());
                    self.selections(ty, &inline.selection_set.node)?;
                }
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    /// Recursion follows list and object literals: bounded by the gate like `selections`.
    fn value<'a>(&'a self, value: &'a Value, ty: &'a str, place: &mut Place<'a>) -> Result<(), String> {
        match value {
            Value::String(s) if self.enums.contains_key(ty) => Err(self.refusal(s, ty, place)),
            Value::List(items) => items.iter().try_for_each(|item| self.value(item, ty, place)),
            Value::Object(object) => {
                let Some(fields) = self.inputs.get(ty) else {
                    return Ok(());
                };
                for (name, item) in object {
                    if let Some(field_ty) = fields.get(name.as_str()) {
                        place.input_fields.push((name.as_str(), ty));
                        self.value(item, field_ty, place)?;
                        place.input_fields.pop();
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn refusal(&self, given: &str, ty: &str, place: &Place) -> String {
        let is_name = given.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && given.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name {
            format!("{} takes an enum value: write {given}, not {given:?}", place.describe())
        } else {
            let values = self.enums.get(ty).map(|v| v.join(", ")).unwrap_or_default();
            format!(
                "{} takes an enum value (one of {values}), not a string",
                place.describe()
            )
        }
    }
}
