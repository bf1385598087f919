//! NIR's XML documents (namespace `urn:no:imdi:nir:ws4:v1`). The wire shape is
//! this mock's design, in the style of an older government register.

use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "urn:no:imdi:nir:ws4:v1";

/// The introduction-programme participation of one person for one period.
/// The natural key is (`Fodselsnummer`, `Periode/Startdato`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Deltakelse", rename_all = "PascalCase")]
pub struct Deltakelse {
    #[serde(rename = "@xmlns", default = "ns", skip_deserializing)]
    pub xmlns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deltakelse_id: Option<u64>,
    pub person: Person,
    pub kommunenummer: String,
    pub vedtak: Vedtak,
    pub periode: Periode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hurtigspor: Option<Hurtigspor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiltaksliste: Option<Tiltaksliste>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permisjoner: Option<Permisjoner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stansliste: Option<Stansliste>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avslutning: Option<Avslutning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sist_endret: Option<String>,
}

fn ns() -> String {
    NAMESPACE.to_owned()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Person {
    pub fodselsnummer: String,
}

/// The kommune's decision on the programme.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Vedtak {
    pub vedtaksdato: String,
    /// INNVILGET or AVSLATT.
    pub utfall: String,
    /// INTRODUKSJONSLOVEN, INTEGRERINGSLOVEN or INTEGRERINGSLOVEN_KAP6A.
    pub lovgrunnlag: String,
    /// RETT_OG_PLIKT or KAN_TILBYS.
    pub kategori: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Periode {
    pub startdato: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planlagt_sluttdato: Option<String>,
}

/// The hurtigspor marker and status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Hurtigspor", rename_all = "PascalCase")]
pub struct Hurtigspor {
    pub markert: bool,
    /// KANDIDAT, BEKREFTET, KVALIFISERING, JOBBMATCHING, ANSATT_MED_TILSKUDD,
    /// ANSATT, TILBAKE_TIL_ORDINAERT, AVSLUTTET_UTEN_RESULTAT, AVSLATT.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fra: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Tiltaksliste")]
pub struct Tiltaksliste {
    #[serde(rename = "Tiltak", default)]
    pub tiltak: Vec<Tiltak>,
}

/// A measure in the programme.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Tiltak {
    /// NORSKOPPLAERING, SPRAKPRAKSIS, ARBEIDSTRENING, LONNSTILSKUDD, MENTOR,
    /// KURS, UTDANNING, GODKJENNING, ANNET.
    #[serde(rename = "Type")]
    pub type_: String,
    pub fra: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub til: Option<String>,
    /// Part of the hurtigspor.
    #[serde(default)]
    pub hurtigspor: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Permisjoner")]
pub struct Permisjoner {
    #[serde(rename = "Permisjon", default)]
    pub permisjon: Vec<Permisjon>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Permisjon {
    pub vedtaksdato: String,
    pub fra: String,
    pub til: String,
    /// FODSEL_OMSORG, SYKDOM, VELFERD, ANNET.
    pub arsak: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Stansliste")]
pub struct Stansliste {
    #[serde(rename = "Stans", default)]
    pub stans: Vec<Stans>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Stans", rename_all = "PascalCase")]
pub struct Stans {
    /// MIDLERTIDIG (at most three months) or PERMANENT.
    #[serde(rename = "Type")]
    pub type_: String,
    pub fra: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub til: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Avslutning", rename_all = "PascalCase")]
pub struct Avslutning {
    pub sluttdato: String,
    /// FULLFORT, ARBEID, UTDANNING, FLYTTET, STANSET, EGET_ONSKE, ANNET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avslutningsarsak: Option<String>,
    /// ARBEID, UTDANNING, ARBEID_OG_UTDANNING, INGEN, ANNET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hovedaktivitet_etter_avslutning: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Sok", rename_all = "PascalCase")]
pub struct Sok {
    pub fodselsnummer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Deltakelser")]
pub struct Deltakelser {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    #[serde(rename = "Deltakelse", default)]
    pub deltakelse: Vec<Deltakelse>,
}

/// NIR's error document: its own codes, the Norwegian message, the field.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename = "Feil", rename_all = "PascalCase")]
pub struct Feil {
    #[serde(rename = "@xmlns")]
    pub xmlns: String,
    pub kode: String,
    pub melding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub felt: Option<String>,
}

/// Serialises a document with the XML declaration.
pub fn to_xml<T: Serialize>(doc: &T) -> String {
    let body = quick_xml::se::to_string(doc).expect("NIR documents serialise");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}")
}

pub fn from_xml<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, String> {
    quick_xml::de::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips() {
        let d = Deltakelse {
            xmlns: ns(),
            deltakelse_id: Some(7),
            person: Person { fodselsnummer: "15838510075".into() },
            kommunenummer: "0301".into(),
            vedtak: Vedtak {
                vedtaksdato: "2026-01-02".into(),
                utfall: "INNVILGET".into(),
                lovgrunnlag: "INTEGRERINGSLOVEN".into(),
                kategori: "RETT_OG_PLIKT".into(),
            },
            periode: Periode { startdato: "2026-01-05".into(), planlagt_sluttdato: Some("2028-01-04".into()) },
            hurtigspor: Some(Hurtigspor { markert: true, status: "KANDIDAT".into(), fra: None }),
            tiltaksliste: Some(Tiltaksliste {
                tiltak: vec![Tiltak {
                    type_: "SPRAKPRAKSIS".into(),
                    fra: "2026-02-01".into(),
                    til: None,
                    hurtigspor: true,
                }],
            }),
            permisjoner: None,
            stansliste: None,
            avslutning: None,
            registrert: None,
            sist_endret: None,
        };
        let xml = to_xml(&d);
        assert!(xml.contains("<Deltakelse xmlns=\"urn:no:imdi:nir:ws4:v1\">"), "{xml}");
        assert!(xml.contains("<Type>SPRAKPRAKSIS</Type>"), "{xml}");
        let back: Deltakelse = from_xml(&xml).unwrap();
        assert_eq!(back.tiltaksliste, d.tiltaksliste);
        assert_eq!(back.person, d.person);
    }
}
