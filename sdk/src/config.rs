//! Policy config files are TOML. `parse_toml` turns the text `init` receives into your
//! serde type, with an error that names the line and the key.

/// Parses a policy's config text. "" parses as an empty table (all defaults).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| format!("config: {}", e.to_string().trim()))
}
