"""The plan of provision-encrypted-ibm-image: what each step would do, from reads only."""

from __future__ import annotations

import os

from prefect import task

from blocks.ibm import IBMCloudCredentials
from byok.ibm_models import (
    DEK_NAME,
    IbmImageRequest,
    ImagePlan,
    api_key_name,
    export_key,
    import_scopes,
    kms_authorization,
    object_uri,
    policy_name,
)
from clients.ibm import IBMClients
from clients.ibm_cos_objects import head
from clients.ibm_policies import find_policy
from clients.ibm_service_ids import api_keys_named, service_ids_named
from clients.key_protect_keys import find_root_key
from clients.softlayer_templates import find_guest
from tasks.ibm_cos import ensure_bucket
from tasks.ibm_iam import (
    create_import_api_key,
    ensure_import_service_id,
    ensure_kms_authorization,
    retire_import_api_keys,
)
from tasks.ibm_image_source import prepare_source
from tasks.ibm_key_protect import ensure_root_key, prepare_dek, write_dek_file
from tasks.ibm_softlayer import import_image, order_virtual_server
from tasks.ibm_transfer import upload_image
from tasks.in_memory import IN_MEMORY
from tasks.outcomes import planned
from tasks.retry import STEP_RETRIES


@task(name="Plan the encrypted image", **STEP_RETRIES, **IN_MEMORY)
def plan_ibm_image(
    credentials: IBMCloudCredentials, request: IbmImageRequest, found: ImagePlan
) -> None:
    """What each step of provision-encrypted-ibm-image would do, given what the validation
    `found`: the root key, the DEK, the authorization, the bucket, the encrypted object, the
    import's service ID, policies and API key, the template and the virtual server."""
    clients = IBMClients.of(credentials)
    region, account, bucket = credentials.region, credentials.account_id, request.bucket
    kp_instance = request.key_protect_instance_id
    key = find_root_key(clients.key_protect(kp_instance), request.root_key)
    name = f"root key {key['name'] if key else request.root_key}"
    imported = "imported material" if request.root_key_material_block else ""
    planned(ensure_root_key, name, None if key else "create", key["crn"] if key else imported)
    template = found.template
    recorded = found.encrypted_object or found.pending_dek
    adopted = (
        template is None
        and request.dek_secret_block is None
        and key is not None
        and recorded is not None
        and recorded.root_key_crn == key["crn"]
    )
    if adopted and recorded is not None:
        planned(prepare_dek, DEK_NAME, "adopt", f"a previous run's, keyhash {recorded.keyhash}")
    elif template is None:
        size = 32 if request.dek_from_key_protect else request.dek_size
        own = request.dek_secret_block is not None
        made = f"Secret block {request.dek_secret_block}" if own else f"{size} bytes"
        planned(prepare_dek, DEK_NAME, "wrap" if own else "generate", made)
    if template is None and request.dek_file is not None:
        kept = os.path.exists(request.dek_file)
        planned(write_dek_file, request.dek_file, None if kept else "write")
    subject, scope = kms_authorization(account, kp_instance)
    authorized = find_policy(clients, "authorization", subject, scope, {})
    planned(
        ensure_kms_authorization,
        policy_name("server-protect", scope),
        None if authorized else "grant",
        f"policy {authorized}" if authorized else "",
    )
    bucket_verb = None if found.bucket_exists else "create"
    planned(ensure_bucket, object_uri(region, bucket, ""), bucket_verb)
    uri = object_uri(region, bucket, request.object_key)
    s3 = clients.cos(request.cos_instance_id)
    if template is None and adopted and found.encrypted_object is not None:
        planned(upload_image, uri, None, "encrypted with the recorded DEK")
    elif template is None:
        if request.source_template_id is not None:
            exported = export_key(request.image_name)[1]
            there = found.bucket_exists and head(s3, bucket, exported) is not None
            planned(
                prepare_source,
                object_uri(region, bucket, exported),
                None if there else "export",
                f"template {request.source_template_id}",
            )
        else:
            source = request.source_file or object_uri(region, bucket, str(request.source_object))
            planned(prepare_source, source, "verify")
        replaced = "replaces the object of another DEK" if found.encrypted_object else ""
        planned(upload_image, uri, "upload", replaced)
    service_ids = service_ids_named(clients, request.service_id_name)
    key_name = api_key_name(request)
    if template is None:
        name = f"service ID {request.service_id_name}"
        planned(ensure_import_service_id, name, None if service_ids else "create")
        iam_id = service_ids[0]["iam_id"] if service_ids else None
        for scope in import_scopes(account, request.cos_instance_id, bucket, kp_instance):
            query = {"iam_id": str(iam_id)}
            held = iam_id is not None and find_policy(clients, "access", query, scope, query)
            planned(create_import_api_key, policy_name(name, scope), None if held else "grant")
        planned(
            create_import_api_key,
            f"API key {key_name}",
            "create",
            "single-use: deleted once the import ends",
        )
        planned(import_image, f"image template {request.image_name}", "import", f"from {uri}")
        planned(retire_import_api_keys, f"API key {key_name}", "delete")
    else:
        note = f"id {template.id}, {template.status}"
        planned(import_image, f"image template {template.name}", None, note)
        stale = [k for s in service_ids for k in api_keys_named(clients, s["iam_id"], key_name)]
        if stale:
            planned(retire_import_api_keys, f"API key {key_name}", "delete", f"{len(stale)} key(s)")
    if request.order is not None:
        order = request.order
        guest = find_guest(clients.softlayer(), order.hostname, order.domain)
        planned(
            order_virtual_server,
            f"virtual server {order.hostname}.{order.domain}",
            None if guest else "create",
            f"id {guest}" if guest else "",
        )
