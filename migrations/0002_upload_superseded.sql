-- An upload İYS answered H174 while it already held the same status for the key from another
-- record (an older ONAY, say): that record is in force, so the upload is closed as superseded,
-- keeping İYS's transactionId and creationDate (as a registration does) and the H-code with
-- its message (as a refusal does). Final, like registered and rejected.
ALTER TABLE upload_outbox DROP CONSTRAINT upload_outbox_state_check;
ALTER TABLE upload_outbox ADD CONSTRAINT upload_outbox_state_check
    CHECK (state IN ('pending', 'in_flight', 'registered', 'rejected', 'expired', 'superseded'));
ALTER TABLE upload_outbox DROP CONSTRAINT upload_outbox_check1;
ALTER TABLE upload_outbox ADD CONSTRAINT upload_outbox_check1
    CHECK ((state IN ('registered', 'superseded'))
           = (transaction_id IS NOT NULL AND iys_creation_date IS NOT NULL));
ALTER TABLE upload_outbox DROP CONSTRAINT upload_outbox_check2;
ALTER TABLE upload_outbox ADD CONSTRAINT upload_outbox_check2
    CHECK ((state IN ('rejected', 'superseded')) = (reject_code IS NOT NULL));

ALTER TABLE upload_attempts DROP CONSTRAINT upload_attempts_outcome_check;
ALTER TABLE upload_attempts ADD CONSTRAINT upload_attempts_outcome_check
    CHECK (outcome IN ('registered', 'rejected', 'retry', 'superseded'));
