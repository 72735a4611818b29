//! The endpoints: pull, single and batch add, poll, status, the daily file and agreement.

use super::*;

#[tokio::test(start_paused = true)]
async fn pull_204_is_an_empty_page() {
    let h = harness().await;
    h.fake.script(204, "");
    let page = h
        .client
        .pull_changes(
            700_001,
            700_002,
            PullSource::Hs,
            Some("1597740617_a b/c"),
            999,
        )
        .await
        .unwrap();
    assert_eq!(page, ChangesPage::default());
    assert!(page.after.is_none(), "the caller keeps its own cursor");
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.path,
        "/sps/700001/brands/700002/consents/changes?source=HS&limit=999&after=1597740617_a%20b%2Fc"
    );
}

#[tokio::test(start_paused = true)]
async fn pull_parses_changes() {
    let h = harness().await;
    h.fake.script(200, PAGE);
    let page = pull(&h).await.unwrap();
    assert_eq!(page.after.as_deref(), Some("1772434800_ab12"));
    let [first, second] = page.list.as_slice() else {
        panic!("two rows expected");
    };
    assert_eq!(first.source, "IYS_WEB_YENI");
    assert_eq!(first.channel, "MESAJ");
    assert_eq!(first.citizen_name.as_deref(), Some("Ayşe Yılmaz"));
    assert_eq!(first.consent_date.as_deref(), Some("2026-03-02 09:00:00"));
    assert_eq!(
        second.consent_date, None,
        "empty consentDate of a TACIR line closure"
    );
    assert_eq!(second.recipient_type, "TACIR");
    let shown = format!("{page:?}");
    assert!(
        !shown.contains("+90555") && !shown.contains("Ayşe"),
        "{shown}"
    );
    assert!(
        h.fake.requests()[0]
            .path
            .ends_with("?source=IYS&limit=1000")
    );
}

#[tokio::test(start_paused = true)]
async fn pull_limit_is_checked_locally() {
    let h = harness().await;
    for limit in [0, 1001] {
        let err = h
            .client
            .pull_changes(1, 1, PullSource::Iys, None, limit)
            .await;
        assert!(matches!(err, Err(IysError::InvalidRequest(_))));
    }
    assert_eq!(h.client.token_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn add_consent_uses_v2_and_omits_empty_fields() {
    let h = harness().await;
    h.fake.script(
        200,
        r#"{"transactionId":"f26a","creationDate":"2026-03-02 10:00:00"}"#,
    );
    let mut request = consent("Ali@Example.com");
    request.recipient_type = Some(String::new());
    request.retailer_access = Some(vec![12_345_678]);
    let added = h
        .client
        .add_consent(700_001, 700_001, &request)
        .await
        .unwrap();
    assert_eq!(
        added,
        AddResult {
            transaction_id: "f26a".into(),
            creation_date: "2026-03-02 10:00:00".into()
        }
    );
    let sent = &h.fake.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v2/sps/700001/brands/700001/consents")
    );
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({"recipient":"Ali@Example.com","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
               "consentDate":"2026-03-02 09:30:00","retailerAccess":[12_345_678]})
    );
    assert!(!format!("{request:?}").contains("Ali@"));
}

#[tokio::test(start_paused = true)]
async fn add_consent_is_retried_after_a_5xx() {
    let h = harness().await;
    h.fake.script(500, "");
    h.fake.script(
        200,
        r#"{"transactionId":"f26a","creationDate":"2026-03-02 10:00:00"}"#,
    );
    h.client
        .add_consent(1, 1, &consent("a@x.com"))
        .await
        .unwrap();
    let sent = h.fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].body, sent[1].body,
        "the identical request is re-sent"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_202_is_parsed() {
    let h = harness().await;
    h.fake.script(
        202,
        r#"{"requestId":"2d8ad598-936a-46e6-b758-7ff2aa74c3b8","subRequests":[
            {"subRequestId":"cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf","type":"EPOSTA","source":"HS_WEB",
             "recipient":"a@x.com","status":"ONAY","consentDate":"2026-03-02 09:30:00","recipientType":"BIREYSEL"},
            {"subrequestId":"7ed0f89d-15c7-457f-a16a-d689ef5dca62","type":"EPOSTA","source":"HS_WEB",
             "recipient":"b@x.com","status":"ONAY","consentDate":"2026-03-02 09:30:00"}]}"#,
    );
    let accepted = h
        .client
        .add_consents_batch(1, 2, &[consent("a@x.com"), consent("b@x.com")])
        .await
        .unwrap();
    assert_eq!(accepted.request_id, "2d8ad598-936a-46e6-b758-7ff2aa74c3b8");
    let ids: Vec<_> = accepted
        .sub_requests
        .iter()
        .map(|s| s.sub_request_id.as_deref())
        .collect();
    assert_eq!(
        ids,
        vec![
            Some("cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf"),
            Some("7ed0f89d-15c7-457f-a16a-d689ef5dca62")
        ]
    );
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.path, "/v2/sps/1/brands/2/consents/request");
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(2), "a bare JSON array");
    assert!(!format!("{accepted:?}").contains("a@x.com"));
}

#[tokio::test(start_paused = true)]
async fn batch_size_is_checked_locally() {
    let h = harness().await;
    let too_many = vec![consent("a@x.com"); MAX_BATCH + 1];
    assert!(matches!(
        h.client.add_consents_batch(1, 1, &too_many).await,
        Err(IysError::InvalidRequest(_))
    ));
    assert!(matches!(
        h.client.add_consents_batch(1, 1, &[]).await,
        Err(IysError::InvalidRequest(_))
    ));
    assert_eq!(h.client.token_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_parses_both_sub_request_id_spellings() {
    let h = harness().await;
    // The v2 example of the spec, verbatim in shape.
    h.fake.script(
        200,
        r#"[{"subRequestId":"cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf","index":0,"status":"failure",
             "error":{"code":"H175","message":"İlk izin kayıt işlemlerinde RET ..."}},
            {"requestId":"548014a006fb33c6wb1a0a1b0vebs5ae","subRequestId":"2666eb07-cbc9-4069-bc6e-4eeb1a48991f",
             "index":1,"transactionId":"432c","status":"success","creationDate":"2020-08-21 14:45:24",
             "isAddConsentV2Service":"true",
             "originalRequestInformation":{"requestId":"2d8ad598-936a-46e6-b758-7ff2aa74c3b8",
                                           "subRequestId":"86ecb540-a362-49b9-9f59-5b9b6eeac2f6"}},
            {"index":2,"status":"enqueue","subrequestId":"7ed0f89d-15c7-457f-a16a-d689ef5dca62"}]"#,
    );
    let items = h
        .client
        .poll_batch(1, 2, "2d8ad598-936a-46e6-b758-7ff2aa74c3b8")
        .await
        .unwrap();
    assert_eq!(
        h.fake.requests()[0].path,
        "/v2/sps/1/brands/2/consents/request/2d8ad598-936a-46e6-b758-7ff2aa74c3b8"
    );
    let statuses: Vec<_> = items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            BatchItemStatus::Failure,
            BatchItemStatus::Success,
            BatchItemStatus::Enqueue
        ]
    );
    assert_eq!(
        items[0].sub_request_id.as_deref(),
        Some("cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf")
    );
    assert_eq!(
        items[2].sub_request_id.as_deref(),
        Some("7ed0f89d-15c7-457f-a16a-d689ef5dca62")
    );
    assert_eq!(
        items[0].error.as_ref().map(|e| e.code.as_str()),
        Some("H175")
    );
    assert_eq!(items[1].is_add_consent_v2_service, Some(true));
    assert_eq!(
        items[1].creation_date.as_deref(),
        Some("2020-08-21 14:45:24")
    );
    assert_eq!(
        items[1]
            .original_request_information
            .as_ref()
            .and_then(|o| o.sub_request_id.as_deref()),
        Some("86ecb540-a362-49b9-9f59-5b9b6eeac2f6")
    );
}

#[tokio::test(start_paused = true)]
async fn poll_empty_array_means_not_processed_yet() {
    let h = harness().await;
    h.fake.script(200, "[]");
    assert!(h.client.poll_batch(1, 2, "r-1").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn consent_status_found_missing_and_wrong_brand() {
    let h = harness().await;
    h.fake.script(
        200,
        r#"{"consentDate":"2020-07-08 07:07:07","source":"HS_CAGRI_MERKEZI","recipientType":"BIREYSEL",
            "status":"ONAY","type":"EPOSTA","recipient":"ornek@ornek.com","retailerCode":55550127,
            "creationDate":"2020-08-06 15:50:23","retailerTitle":"XYZ","retailerAccessCount":3,
            "transactionId":"abc6"}"#,
    );
    h.fake.script(
        404,
        r#"{"errors":[{"code":"H404","message":"Kayıt bulunamadı"}]}"#,
    );
    h.fake.script(
        404,
        r#"{"errors":[{"code":"H018","message":"Marka bulunamadı"}]}"#,
    );
    let found = h
        .client
        .consent_status(1, 2, "ornek@ornek.com", "BIREYSEL", "EPOSTA")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.status.as_str(), found.retailer_code),
        ("ONAY", Some(55_550_127))
    );
    let body: Value = serde_json::from_str(&h.fake.requests()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"recipient":"ornek@ornek.com","recipientType":"BIREYSEL","type":"EPOSTA"})
    );
    let missing = h
        .client
        .consent_status(1, 2, "x@y.co", "TACIR", "EPOSTA")
        .await
        .unwrap();
    assert!(missing.is_none());
    let wrong = h
        .client
        .consent_status(1, 9, "x@y.co", "TACIR", "EPOSTA")
        .await
        .unwrap_err();
    assert_eq!(wrong.codes(), vec!["H018"]);
}

#[tokio::test(start_paused = true)]
async fn daily_file_and_agreement() {
    let h = harness().await;
    let csv = "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source\n";
    h.fake.script(200, csv);
    h.fake.script(204, "");
    h.fake.script(
        200,
        r#"{"processStatus":"completed","hashValue":"f082","hashMethod":"SHA-384","agreementStatus":false}"#,
    );
    h.fake.script(204, "");
    let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    assert_eq!(
        h.client
            .daily_changes_file(1, 2, date)
            .await
            .unwrap()
            .as_deref(),
        Some(csv)
    );
    assert_eq!(h.client.daily_changes_file(1, 2, date).await.unwrap(), None);
    let agreement = h.client.agreement(1, 2, date).await.unwrap().unwrap();
    assert_eq!(agreement.process_status, "completed");
    assert_eq!(agreement.hash_value.as_deref(), Some("f082"));
    assert!(!agreement.agreement_status);
    assert_eq!(h.client.agreement(1, 2, date).await.unwrap(), None);
    let paths: Vec<_> = h.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[0], "/sps/1/brands/2/changes/2026-03-01/file");
    assert_eq!(paths[2], "/sps/1/brands/2/agreements/2026-03-01");
}
