using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.ML;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>
/// Requests that fail part way, against real OpenAI-compatible Kestrel servers on 127.0.0.1 that answer as the API does
/// (its JSON, its error shape and status codes). No TorchSharp.
/// </summary>
public class BlackBoxFailureTests
{
    private static string Completion(string content, long totalTokens, string finishReason = "stop") => new JsonObject
    {
        ["id"] = "x", ["object"] = "chat.completion", ["created"] = 0, ["model"] = "fake",
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = content }, ["finish_reason"] = finishReason }),
        ["usage"] = new JsonObject { ["prompt_tokens"] = totalTokens - 1, ["completion_tokens"] = 1, ["total_tokens"] = totalTokens },
    }.ToJsonString();

    /// <summary>
    /// A generation the endpoint answered (and bills) whose classification then failed: its tokens were dropped with the
    /// sample, so TokensUsed fell short of what the endpoint reported and TokenBudget let the run spend past it (here 330
    /// counted of 530 reported, two more samples after the budget was spent). Every reported token now counts when it is reported.
    /// </summary>
    [Fact]
    public async Task TokensOfAGenerationWhoseClassificationFailedCountTowardsTheBudget()
    {
        long reported = 0;
        int classifications = 0;
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            http.Response.ContentType = "application/json";
            if (prompt.StartsWith("CLS ", StringComparison.Ordinal) && Interlocked.Increment(ref classifications) <= 2)
            {
                // A client error: not retried, the request fails (and the sample is put back).
                http.Response.StatusCode = StatusCodes.Status400BadRequest;
                await http.Response.WriteAsync("{\"error\":{\"message\":\"Try again later.\",\"type\":\"invalid_request_error\"}}");
                return;
            }
            bool classification = prompt.StartsWith("CLS ", StringComparison.Ordinal);
            long tokens = classification ? 10 : 100;
            Interlocked.Add(ref reported, tokens);
            await http.Response.WriteAsync(Completion(classification ? "happy" : $"a story number {Interlocked.Read(ref reported)} about a happy dog", tokens));
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        using var folder = new TempDir("retrikt-blackbox-");
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), folder.File("checkpoint.jsonl"), perLabel: 6);
        options.MaxConsecutiveFailures = 3;
        options.TokenBudget = 250;
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.True(report.StoppedByTokenBudget, report.ToString());
        Assert.Equal(Interlocked.Read(ref reported), report.TokensUsed);
        // Two generations whose classification failed (200 tokens), then the first sample (110): the budget is spent.
        Assert.Equal(310, report.TokensUsed);
        Assert.Equal(1, report.Extraction.Generated.Values.Sum());

        // Resumed from its checkpoint, the run counts the failed attempts' generations too (it counted only the judged
        // sample's 110 tokens, and spent past the budget again): the budget is spent and nothing more is asked.
        var resumed = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(310, resumed.TokensUsed);
        Assert.True(resumed.StoppedByTokenBudget, resumed.ToString());
        Assert.Equal(310, Interlocked.Read(ref reported));
    }

    /// <summary>
    /// 200 answers that are no chat completion (no choices; a body cut off) fail the run in one line naming the endpoint,
    /// the request and its label. The endpoint's last error used to be the client's exception alone: "ArgumentOutOfRangeException:
    /// Index was out of range ..." for an answer with no choices, with nothing saying which request met it.
    /// </summary>
    [Fact]
    public async Task AnAnswerThatIsNoChatCompletionFailsNamingTheEndpointTheRequestAndItsLabel()
    {
        static async Task<string> Run(Func<string, string> answer)
        {
            await using var server = LocalEndpoint.Create();
            server.MapPost("/v1/chat/completions", async (HttpContext http) =>
            {
                var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
                http.Response.ContentType = "application/json";
                await http.Response.WriteAsync(answer(request["messages"]![0]!["content"]!.GetValue<string>()));
            });
            await server.StartAsync();
            var ml = new MLContext(seed: 1);
            var error = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2))
                .Fit(BlackBoxExtractionTests.StoryData(ml)));
            Assert.DoesNotContain('\n', error.Message);
            return error.Message;
        }

        const string noChoices = "{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"fake\",\"choices\":[]}";
        var message = await Run(prompt => prompt.StartsWith("CLS ", StringComparison.Ordinal) ? noChoices : Completion("the happy dog ran home fast", 10));
        Assert.StartsWith("All 1 teacher endpoints were taken out after failing 2 requests in a row (fake, last: classification request for label 'happy': ", message);
        message = await Run(_ => "{\"id\":\"x\",\"choi");
        Assert.StartsWith("All 1 teacher endpoints were taken out after failing 2 requests in a row (fake, last: generation request for label 'happy': ", message);
    }

    /// <summary>
    /// A generation the endpoint's content filter cut off (finish reason content_filter: the text stops where the filter
    /// stepped in) is as unfinished as one cut at the token limit: with DropUnfinished it is dropped as Unfinished, without a
    /// classification request. It used to count as finished and go into the store as a whole sample.
    /// </summary>
    [Fact]
    public async Task AGenerationCutOffByTheContentFilterIsUnfinished()
    {
        int classifications = 0, generations = 0;
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            http.Response.ContentType = "application/json";
            if (prompt.StartsWith("CLS ", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref classifications);
                await http.Response.WriteAsync(Completion("happy", 10));
                return;
            }
            await http.Response.WriteAsync(Completion($"story {Interlocked.Increment(ref generations)} where the dog went to the", 10, "content_filter"));
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2);
        options.DropUnfinished = true;
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(0, report.Extraction.Kept.Values.Sum());
        Assert.Equal(report.Extraction.Generated.Values.Sum(), report.Extraction.Dropped[Knowledge.Extraction.DropReason.Unfinished]);
        Assert.Equal(0, classifications);
    }

    /// <summary>
    /// An endpoint whose answers carry no token usage cannot be held to a TokenBudget: the run goes on as if nothing were
    /// spent. It is named once in a warning; it used to say nothing, the report showing 0 tokens and no budget reached.
    /// </summary>
    [Fact]
    public async Task AnEndpointThatReportsNoTokenUsageIsNamedWhenATokenBudgetIsSet()
    {
        int generations = 0;
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            var answer = JsonNode.Parse(Completion(prompt.StartsWith("CLS ", StringComparison.Ordinal) ? "happy" : $"story {Interlocked.Increment(ref generations)} of a happy dog", 10))!.AsObject();
            answer.Remove("usage");
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(answer.ToJsonString());
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2);
        options.TokenBudget = 50;
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(0, report.TokensUsed);
        Assert.False(report.StoppedByTokenBudget);
        Assert.Single(warnings, w => w.EndsWith("Teacher endpoint 'fake' answers without token usage: its requests count nothing towards TokenBudget (50), so the budget does not limit them.", StringComparison.Ordinal));
    }

    /// <summary>
    /// Generation answers with no text (a chat model whose reply begins with the newline that is the default stop sequence,
    /// or a content filter that withholds it): every sample is dropped as Empty. The run says so, naming the settings to
    /// look at; it used to warn only "kept 0 of 2 ... (raise MaxAttemptsFactor or relax the filters)", which cannot help.
    /// </summary>
    [Fact]
    public async Task GenerationAnswersWithNoTextAreNamedNotBlamedOnTheFilters()
    {
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(Completion(prompt.StartsWith("CLS ", StringComparison.Ordinal) ? "happy" : "", 10));
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2)).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(8, report.Extraction.Dropped[Knowledge.Extraction.DropReason.Empty]);
        Assert.Single(warnings, w => w.EndsWith("8 of 8 judged samples came back empty and were dropped as Empty: the endpoints answered the generation requests with no text " +
            "(a reply that begins with a stop sequence, such as the default newline: see StopSequences and GenerationPrompt; or one the endpoint's content filter withheld).", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.EndsWith("Label 'happy': kept 0 of 2 wanted samples after 4 generated (most samples came back empty, see above).", StringComparison.Ordinal));
        Assert.DoesNotContain(warnings, w => w.Contains("relax the filters", StringComparison.Ordinal));
    }

    /// <summary>
    /// Generation answers that hold only characters the student's tokenizer drops (zero-width spaces, a control character):
    /// they were judged by whitespace alone, so each was sent for classification (a billed request) and counted in the
    /// teacher's label tally before the word count dropped it. They are now judged Empty as a blank answer is, by the one
    /// test every reader of texts to label uses, and no classification is asked for.
    /// </summary>
    [Fact]
    public async Task GenerationAnswersOfOnlyDroppedCharactersAreJudgedEmptyWithoutAClassification()
    {
        int classifications = 0;
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            bool classification = prompt.StartsWith("CLS ", StringComparison.Ordinal);
            if (classification) Interlocked.Increment(ref classifications);
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(Completion(classification ? "happy" : "\u200B\u200B \u0007 \u200B", 10));
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2)).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(8, report.Extraction.Dropped[Knowledge.Extraction.DropReason.Empty]);
        Assert.Equal(0, classifications);
    }

    /// <summary>
    /// An OpenAI-compatible endpoint that refuses <c>logprobs</c>/<c>top_logprobs</c> with 400 (as several providers and local
    /// servers do). SoftLabels Auto promises classify-and-map where log-probabilities are not returned, but every
    /// classification request failed, the endpoint was taken out and the run failed. Auto now asks once more without them,
    /// says so in one line naming the endpoint and the provider's error, and asks that endpoint without them from then on;
    /// samples resumed from a run that had them keep their source, and the report says the store is mixed. LogProbs still fails.
    /// </summary>
    [Fact]
    public async Task AnEndpointThatRefusesLogProbsFallsBackToClassifyAndMapUnderAuto()
    {
        bool refuse = false;
        int refused = 0, generations = 0;
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            http.Response.ContentType = "application/json";
            if (!prompt.StartsWith("CLS ", StringComparison.Ordinal))
            {
                var label = prompt.StartsWith("GEN happy", StringComparison.Ordinal) ? "happy" : "sad";
                await http.Response.WriteAsync(Completion($"story {Interlocked.Increment(ref generations)} of a {label} dog", 10));
                return;
            }
            var word = prompt.Contains("happy", StringComparison.Ordinal) ? "happy" : "sad";
            if (request["logprobs"] is null)
            {
                await http.Response.WriteAsync(Completion(word, 10));
                return;
            }
            if (Volatile.Read(ref refuse))
            {
                Interlocked.Increment(ref refused);
                http.Response.StatusCode = StatusCodes.Status400BadRequest;
                await http.Response.WriteAsync("{\"error\":{\"message\":\"logprobs is not supported by this model\",\"type\":\"invalid_request_error\",\"param\":\"logprobs\"}}");
                return;
            }
            var answer = JsonNode.Parse(Completion(word, 10))!.AsObject();
            var other = word == "happy" ? "sad" : "happy";
            answer["choices"]![0]!["logprobs"] = new JsonObject
            {
                ["content"] = new JsonArray(new JsonObject
                {
                    ["token"] = word, ["logprob"] = -0.1, ["bytes"] = null,
                    ["top_logprobs"] = new JsonArray(new JsonObject { ["token"] = word, ["logprob"] = -0.1, ["bytes"] = null }, new JsonObject { ["token"] = other, ["logprob"] = -2.5, ["bytes"] = null }),
                }),
            };
            await http.Response.WriteAsync(answer.ToJsonString());
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        using var folder = new TempDir("retrikt-blackbox-");
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), folder.File("checkpoint.jsonl"), perLabel: 2);
        options.SoftLabels = SoftLabelSource.Auto;
        // A first run on an endpoint that returns log-probabilities, stopped early by its budget (two samples of 20 tokens).
        options.TokenBudget = 30;
        var first = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal((2, 0), (first.FromLogProbs, first.FromClassification));

        // Resumed on the same endpoint, now refusing them: the run completes by classify-and-map, asking with them once.
        Volatile.Write(ref refuse, true);
        options.TokenBudget = null;
        lock (warnings) warnings.Clear();
        var resumed = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)).Report;
        Assert.Equal(4, resumed.Extraction.Kept.Values.Sum());
        Assert.Equal((2, 2), (resumed.FromLogProbs, resumed.FromClassification));
        Assert.Equal("mixed", resumed.SoftLabelSource);
        Assert.Equal(1, Volatile.Read(ref refused));
        Assert.Empty(resumed.EndpointsTakenOut);
        var fallback = Assert.Single(warnings);
        Assert.DoesNotContain('\n', fallback);
        Assert.Contains("Teacher endpoint 'fake' refused log-probabilities (", fallback);
        Assert.Contains("logprobs is not supported by this model", fallback);

        // Asked for log-probabilities only, the same endpoint still fails the run, in one line naming the provider's error.
        options.SoftLabels = SoftLabelSource.LogProbs;
        options.CheckpointPath = null;
        var error = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)));
        Assert.DoesNotContain('\n', error.Message);
        Assert.Contains("logprobs is not supported by this model", error.Message);
    }

    /// <summary>
    /// An endpoint that answers 429 with a long Retry-After: the run waits it out before retrying, and said nothing (no
    /// log line, no progress) until the request ended, so a run looked hung for up to MaxRetryDelay per wait. Each wait is
    /// now named when it starts, in one line naming the endpoint, the status and the wait, and progress counts the retry;
    /// cancelling during the wait ends the run at once.
    /// </summary>
    [Fact]
    public async Task ALongRetryAfterWaitIsNamedWhenItStartsAndCancellationEndsItAtOnce()
    {
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            http.Response.StatusCode = StatusCodes.Status429TooManyRequests;
            http.Response.Headers.RetryAfter = "30";
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync("{\"error\":{\"message\":\"Rate limit reached for requests.\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}");
        });
        await server.StartAsync();

        var ml = new MLContext(seed: 1);
        // The old code said nothing during the wait: the test cancels the run itself then, and fails on what it saw.
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(8));
        var waits = new List<string>();
        var cancelledAt = System.Diagnostics.Stopwatch.StartNew();
        ml.Log += (_, e) =>
        {
            if (!e.Message.Contains("Teacher endpoint 'fake'", StringComparison.Ordinal)) return;
            lock (waits) waits.Add(e.Message);
            cancelledAt.Restart();
            cancel.Cancel();
        };
        var retries = new List<double>();
        var progress = new SyncProgress(p => { lock (retries) retries.Add(p.Metrics["retries"]); });
        var options = BlackBoxCheckpointTests.Options(server.Urls.Single(), null, perLabel: 2, token: cancel.Token, progress: progress);
        options.MaxRetryDelay = TimeSpan.FromMinutes(1);
        Assert.ThrowsAny<OperationCanceledException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(BlackBoxExtractionTests.StoryData(ml)));
        Assert.InRange(cancelledAt.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(3));
        var wait = Assert.Single(waits);
        Assert.DoesNotContain('\n', wait);
        Assert.EndsWith("Teacher endpoint 'fake' waits 30 s for retry 1 of 1 after ClientResultException: HTTP 429 (requests: rate_limit_exceeded) Rate limit reached for requests.", wait);
        Assert.Equal([1.0], retries);
    }
}
