"""Every secret the tests hand to the bot; the autouse fixture in conftest checks logs for them."""

ALL_TEST_SECRETS = {
    "NEXTLEG_API_TOKEN": "nl-test-token-8f3a9c1e77",
    "DISCORD_BOT_TOKEN": "discord-test-token.Xy9.abcdef123456",
    "SLACK_BOT_TOKEN": "xoxb-test-1234-5678-abcdefSECRET",
    "SLACK_APP_TOKEN": "xapp-1-test-A111-2222-SECRETabc",
    "SLACK_SIGNING_SECRET": "signing-secret-0f9e8d7c6b5a",
    "USEAPI_API_TOKEN": "useapi-test-token-9d41c7",
    "LINKR_API_KEY": "lkr_test_provider_4d2a91",
    "MJPROXY_API_SECRET": "mj-admin-secret-provider-5e81",
}
