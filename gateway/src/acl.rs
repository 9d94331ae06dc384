//! Authorisation of publishes and subscriptions: ordered rules with topic
//! templates (`%c` the client id, `%u` the user name), the first that
//! applies deciding, and a default for when none does. Pure.
//!
//! Every rule is checked within the client's app: topics are scoped to the
//! app whatever the rules say, and `$`-topics stay closed to publishes and
//! `$push/{id}` open to its own device only (checked before the rules).

use herald_core::AppId;
use herald_core::topic::{covers, matches, validate_topic_filter};

/// What a rule does to what it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Let it through.
    Allow,
    /// Refuse it (PUBACK/PUBREC or SUBACK 0x87).
    Deny,
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publish to a topic.
    Publish,
    /// Subscribe to a filter.
    Subscribe,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its app; `None`: every app.
    pub app: Option<AppId>,
    /// Allow or deny.
    pub permission: Permission,
    /// Whether it applies to publishes.
    pub publish: bool,
    /// Whether it applies to subscriptions.
    pub subscribe: bool,
    /// Topic filters, with `%c` and `%u` standing for whole levels or parts
    /// of levels.
    pub topics: Vec<String>,
    /// Only these user names; empty: anyone.
    pub users: Vec<String>,
    /// Only these client ids; empty: anyone.
    pub clients: Vec<String>,
}

/// The rules and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Permission,
}

impl Default for Acl {
    fn default() -> Self {
        Acl { rules: Vec::new(), default: Permission::Allow }
    }
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The client's app.
    pub app: &'a AppId,
    /// Its client id.
    pub client: &'a str,
    /// Its user name, if it gave one.
    pub user: Option<&'a str>,
}

impl Acl {
    /// Rules in order, then `default`. Each rule's topics, with the
    /// placeholders filled in, must be valid filters (checked here with a
    /// placeholder standing in).
    pub fn new(rules: Vec<Rule>, default: Permission) -> Result<Acl, String> {
        for (i, rule) in rules.iter().enumerate() {
            if rule.topics.is_empty() {
                return Err(format!("rule {i}: name at least one topic"));
            }
            for topic in &rule.topics {
                validate_topic_filter(&topic.replace("%c", "x").replace("%u", "x"))
                    .map_err(|e| format!("rule {i}: topic {topic:?}: {e}"))?;
            }
        }
        Ok(Acl { rules, default })
    }

    /// Whether anything is ever refused.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.default == Permission::Allow
    }

    /// Whether `who` may publish to `topic` (`Access::Publish`) or
    /// subscribe to `filter` (`Access::Subscribe`, the filter without any
    /// `$share/{group}/` prefix).
    pub fn allows(&self, who: Client<'_>, access: Access, topic: &str) -> bool {
        let decided = self.rules.iter().find_map(|rule| {
            let applies = rule.app.as_ref().is_none_or(|app| app == who.app)
                && match access {
                    Access::Publish => rule.publish,
                    Access::Subscribe => rule.subscribe,
                }
                && (rule.users.is_empty() || who.user.is_some_and(|u| rule.users.iter().any(|r| r == u)))
                && (rule.clients.is_empty() || rule.clients.iter().any(|c| c == who.client))
                && rule.topics.iter().any(|template| {
                    expand(template, who).is_some_and(|filter| match access {
                        Access::Publish => matches(&filter, topic),
                        Access::Subscribe => covers(&filter, topic),
                    })
                });
            applies.then_some(rule.permission)
        });
        decided.unwrap_or(self.default) == Permission::Allow
    }
}

/// Fills `%c` and `%u` in; `None` when a value is missing, or holds a
/// character that would change the filter's shape (`/`, `+`, `#`): such a
/// client simply does not match the template.
fn expand(template: &str, who: Client<'_>) -> Option<String> {
    let safe = |value: &str| !value.is_empty() && !value.contains(['/', '+', '#']);
    let mut filter = template.to_owned();
    if filter.contains("%c") {
        if !safe(who.client) {
            return None;
        }
        filter = filter.replace("%c", who.client);
    }
    if filter.contains("%u") {
        let user = who.user.filter(|u| safe(u))?;
        filter = filter.replace("%u", user);
    }
    Some(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(permission: Permission, publish: bool, subscribe: bool, topics: &[&str]) -> Rule {
        Rule {
            app: None,
            permission,
            publish,
            subscribe,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            users: Vec::new(),
            clients: Vec::new(),
        }
    }

    fn shop() -> AppId {
        AppId::new("shop").expect("app")
    }

    #[test]
    fn the_first_rule_that_applies_decides_and_templates_name_the_client() {
        let acl = Acl::new(
            vec![
                rule(Permission::Allow, true, true, &["devices/%c/#"]),
                rule(Permission::Allow, false, true, &["broadcast/#"]),
                Rule { users: vec!["ops".into()], ..rule(Permission::Allow, true, true, &["#"]) },
                rule(Permission::Deny, true, true, &["#"]),
            ],
            Permission::Allow,
        )
        .expect("valid");
        let app = shop();
        let dev = Client { app: &app, client: "dev-1", user: Some("alice") };
        assert!(acl.allows(dev, Access::Publish, "devices/dev-1/up"));
        assert!(!acl.allows(dev, Access::Publish, "devices/dev-2/up"), "another device's topic");
        assert!(acl.allows(dev, Access::Subscribe, "devices/dev-1/+"));
        assert!(!acl.allows(dev, Access::Subscribe, "devices/+/up"), "a filter reaching other devices");
        assert!(acl.allows(dev, Access::Subscribe, "broadcast/news"));
        assert!(!acl.allows(dev, Access::Publish, "broadcast/news"), "subscribe-only");
        let ops = Client { user: Some("ops"), ..dev };
        assert!(acl.allows(ops, Access::Subscribe, "#"));
        // A client id that would widen the filter matches no template.
        let sly = Client { client: "+", ..dev };
        assert!(!acl.allows(sly, Access::Publish, "devices/dev-2/up"));
        assert!(!acl.allows(Client { client: "#", ..dev }, Access::Subscribe, "devices/#"));
    }

    #[test]
    fn rules_of_one_app_leave_other_apps_to_the_default_and_users_must_be_present() {
        let shop_only = Rule { app: Some(shop()), ..rule(Permission::Deny, true, true, &["#"]) };
        let by_user = rule(Permission::Allow, true, false, &["users/%u/#"]);
        let acl = Acl::new(vec![by_user, shop_only], Permission::Allow).expect("valid");
        let (shop, other) = (shop(), AppId::new("other").expect("app"));
        let anonymous = Client { app: &shop, client: "c", user: None };
        assert!(!acl.allows(anonymous, Access::Publish, "users/x/1"), "no user: the template cannot apply");
        assert!(acl.allows(Client { user: Some("x"), ..anonymous }, Access::Publish, "users/x/1"));
        assert!(acl.allows(Client { app: &other, ..anonymous }, Access::Publish, "anything"));
        assert!(Acl::default().is_open());
        assert!(!acl.is_open());
    }

    #[test]
    fn invalid_templates_are_refused_when_read() {
        let bad = Acl::new(vec![rule(Permission::Allow, true, true, &["a/#/b"])], Permission::Deny);
        assert!(bad.is_err_and(|e| e.contains("rule 0")));
        assert!(Acl::new(vec![rule(Permission::Allow, true, true, &[])], Permission::Deny).is_err());
    }
}
