"""An independent reader of GB/T 38540 v4 SES_Signature DER, written from the standard's ASN.1
with pyasn1 (no code shared with the Rust crate). Decodes every field, re-encodes the two signed
parts (SES_SealInfo, TBS_Sign) with pyasn1's own DER encoder and writes them, the signatures and
the certificates into OUT_DIR for OpenSSL; prints every field as JSON.

usage: read_seal.py SIGNATURE.der OUT_DIR
"""
import json
import os
import sys

from pyasn1.codec.der import decoder, encoder
from pyasn1.type import char, namedtype, tag, univ, useful


class SESHeader(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("id", char.IA5String()),
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("vid", char.IA5String()),
    )


class CertList(univ.SequenceOf):  # certListType 1: the certificates themselves
    componentType = univ.OctetString()


class PropertyInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", univ.Integer()),
        namedtype.NamedType("name", char.UTF8String()),
        namedtype.NamedType("certListType", univ.Integer()),
        namedtype.NamedType("certList", CertList()),
        namedtype.NamedType("createDate", useful.GeneralizedTime()),
        namedtype.NamedType("validStart", useful.GeneralizedTime()),
        namedtype.NamedType("validEnd", useful.GeneralizedTime()),
    )


class PictureInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", char.IA5String()),
        namedtype.NamedType("data", univ.OctetString()),
        namedtype.NamedType("width", univ.Integer()),
        namedtype.NamedType("height", univ.Integer()),
    )


class ExtData(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("extnID", univ.ObjectIdentifier()),
        namedtype.DefaultedNamedType("critical", univ.Boolean(False)),
        namedtype.NamedType("extnValue", univ.OctetString()),
    )


class ExtDatas(univ.SequenceOf):
    componentType = ExtData()


class SealInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("header", SESHeader()),
        namedtype.NamedType("esID", char.IA5String()),
        namedtype.NamedType("property", PropertyInfo()),
        namedtype.NamedType("picture", PictureInfo()),
        namedtype.OptionalNamedType("extDatas", ExtDatas()),
    )


class SESeal(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("eSealInfo", SealInfo()),
        namedtype.NamedType("cert", univ.OctetString()),
        namedtype.NamedType("signAlgID", univ.ObjectIdentifier()),
        namedtype.NamedType("signedValue", univ.BitString()),
    )


class TBSSign(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("eseal", SESeal()),
        namedtype.NamedType("timeInfo", useful.GeneralizedTime()),
        namedtype.NamedType("dataHash", univ.BitString()),
        namedtype.NamedType("propertyInfo", char.IA5String()),
        namedtype.OptionalNamedType(
            "extDatas",
            ExtDatas().subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0)),
        ),
    )


class SESSignature(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("toSign", TBSSign()),
        namedtype.NamedType("cert", univ.OctetString()),
        namedtype.NamedType("signatureAlgID", univ.ObjectIdentifier()),
        namedtype.NamedType("signature", univ.BitString()),
        namedtype.OptionalNamedType(
            "timeStamp",
            univ.BitString().subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0)),
        ),
    )


def main():
    data = open(sys.argv[1], "rb").read()
    out = sys.argv[2]
    sig, rest = decoder.decode(data, asn1Spec=SESSignature())
    assert rest == b"", "trailing bytes"
    tbs = sig["toSign"]
    seal = tbs["eseal"]
    info = seal["eSealInfo"]
    prop = info["property"]
    pic = info["picture"]

    def write(name, b):
        with open(os.path.join(out, name), "wb") as f:
            f.write(b)

    write("sealinfo.der", encoder.encode(info))
    write("tbs.der", encoder.encode(tbs))
    write("maker_sig.der", seal["signedValue"].asOctets())
    write("signer_sig.der", sig["signature"].asOctets())
    write("maker_cert.der", seal["cert"].asOctets())
    write("signer_cert.der", sig["cert"].asOctets())
    fields = {
        "header": {"id": str(info["header"]["id"]), "version": int(info["header"]["version"]),
                   "vid": str(info["header"]["vid"])},
        "esID": str(info["esID"]),
        "property": {
            "type": int(prop["type"]),
            "name": str(prop["name"]),
            "certListType": int(prop["certListType"]),
            "certList": [c.asOctets().hex() for c in prop["certList"]],
            "createDate": str(prop["createDate"]),
            "validStart": str(prop["validStart"]),
            "validEnd": str(prop["validEnd"]),
        },
        "picture": {"type": str(pic["type"]), "data": pic["data"].asOctets().hex(),
                    "width": int(pic["width"]), "height": int(pic["height"])},
        "sealExtDatas": info["extDatas"].isValue,
        "sealCert": seal["cert"].asOctets().hex(),
        "signAlgID": str(seal["signAlgID"]),
        "version": int(tbs["version"]),
        "timeInfo": str(tbs["timeInfo"]),
        "dataHash": tbs["dataHash"].asOctets().hex(),
        "propertyInfo": str(tbs["propertyInfo"]),
        "tbsExtDatas": tbs["extDatas"].isValue,
        "cert": sig["cert"].asOctets().hex(),
        "signatureAlgID": str(sig["signatureAlgID"]),
        "timeStamp": sig["timeStamp"].isValue,
    }
    print(json.dumps(fields, ensure_ascii=False))


if __name__ == "__main__":
    main()
