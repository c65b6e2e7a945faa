using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>RetriKT.TeacherServer as a separate process on 127.0.0.1, spoken to by the official OpenAI client unchanged and over plain HTTP.</summary>
[Collection(TeacherServerCollection.Name)]
public class TeacherServerTests(SharedTeacherServer shared)
{
    private const string Prompt = "Lily went to the park with her mom.";

    /// <summary>Start-up failures as a user meets them: one line on stderr and an exit code, never a stack trace.</summary>
    [Fact]
    public void ASettingOrTeacherItCannotStartWithIsOneLineAndAnExitCode()
    {
        using var folder = new TempDir("retrikt-teacherserver-");
        var damaged = folder.File("model.bin");
        File.WriteAllBytes(damaged, new byte[10]);
        foreach (var (arguments, code, expected) in new (string[], int, string)[]
        {
            ([], 2, "error: TeacherServer needs --ModelPath <Hugging Face directory | llama2.c .bin>."),
            // A setting that is not a value of its type is a setting, as docs/BLACK-BOX-TEACHER.md says: exit code 2 (it was 1).
            (["--ModelPath", damaged, "--BatchWindowMs", "five"], 2, "error: Failed to convert configuration value 'five' at 'BatchWindowMs' to type 'System.Int32'."),
            (["--ModelPath", damaged, "--ChatFormat", "Chat"], 2, "'Chat' at 'ChatFormat'"),
            (["--ModelPath", folder.File("missing.bin")], 1, $"error: Teacher checkpoint not found: {folder.File("missing.bin")}"),
            (["--ModelPath", damaged], 1, damaged),
            // A misspelt switch was skipped by binding: the server ran with the default it meant to change.
            (["--ModelPath", damaged, "--BatchWindow", "20"], 2, "error: Unknown setting '--BatchWindow'; this server's settings are --ModelPath, --ModelId, --BatchWindowMs,"),
            // A negative thread count was taken and ignored (torch kept one thread per core).
            (["--ModelPath", damaged, "--Threads", "-3"], 2, "error: Invalid setting: Threads -3 (>= 0; 0 keeps torch's default, one thread per core)."),
        })
        {
            var (exit, output, error) = TeacherServerProcess.RunToExit(arguments);
            Assert.True(exit == code, $"[{string.Join(' ', arguments)}]: exit code {exit}, expected {code}; stderr: {error}");
            var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains(expected, line);
            Assert.DoesNotContain("listening", output);
        }
    }

    /// <summary>--help (or -h) was refused as an unknown setting with exit code 2; it prints the settings with their defaults.</summary>
    [Fact]
    public void HelpListsTheSettingsWithTheirDefaultsAndExitsZero()
    {
        foreach (var flag in new[] { "--help", "-h" })
        {
            var (exit, output, error) = TeacherServerProcess.RunToExit(flag);
            Assert.True(exit == 0, $"{flag}: exit code {exit}; stderr: {error}");
            Assert.Equal("", error);
            Assert.StartsWith("Usage: dotnet RetriKT.TeacherServer.dll --ModelPath", output);
            Assert.Contains("--BatchWindowMs (default: 5)", output);
            Assert.Contains("--ModelId (default: none)", output);
            Assert.DoesNotContain("listening", output);
        }
    }

    [SharedDataFact]
    public void AnAddressInUseIsOneLineAndExitCodeOne()
    {
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var (exit, output, error) = TeacherServerProcess.RunToExit("--ModelPath", TeacherServerProcess.Stories260K, "--urls", $"http://127.0.0.1:{port}");
        Assert.True(exit == 1, $"exit code {exit}; stdout: {output}; stderr: {error}");
        Assert.Equal($"error: Failed to bind to address http://127.0.0.1:{port}: address already in use.", error.Trim());
        Assert.Equal("", output); // the host's own failure log, with its stack traces, is not printed
    }

    [SharedDataFact]
    public async Task OpenAiClientGetsChatLogProbsStreamingAndCompletionsFromTeacherServer()
    {
        var server = shared.Server;
        var chat = server.ChatClient();

        // Chat completion with logprobs / top_logprobs through Microsoft.Extensions.AI.OpenAI.
        var options = new ChatOptions
        {
            Temperature = 0, MaxOutputTokens = 12,
            RawRepresentationFactory = _ => new ChatCompletionOptions { IncludeLogProbabilities = true, TopLogProbabilityCount = 5 },
        };
        var response = await chat.GetResponseAsync(Prompt, options);
        Assert.False(string.IsNullOrWhiteSpace(response.Text));
        // Microsoft.Extensions.AI.OpenAI 10.11 keeps them on the raw OpenAI ChatCompletion.
        var tokens = Assert.IsType<ChatCompletion>(response.RawRepresentation).ContentTokenLogProbabilities;
        Assert.Equal(response.Usage!.OutputTokenCount, tokens.Count);
        Assert.Equal(response.Text, string.Concat(tokens.Select(t => t.Token)));
        Assert.All(tokens, t =>
        {
            Assert.Equal(5, t.TopLogProbabilities.Count);
            Assert.True(t.LogProbability <= 0, $"log-probability {t.LogProbability}");
            Assert.Equal(t.TopLogProbabilities.Select(a => a.LogProbability).OrderByDescending(x => x), t.TopLogProbabilities.Select(a => a.LogProbability));
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 3); // greedy: the chosen token is the most probable
        });

        // Streaming (SSE) gives the same greedy text in several updates.
        var streamed = new StringBuilder();
        int updates = 0;
        await foreach (var update in chat.GetStreamingResponseAsync(Prompt, new ChatOptions { Temperature = 0, MaxOutputTokens = 12 }))
        {
            streamed.Append(update.Text);
            updates++;
        }
        Assert.Equal(response.Text, streamed.ToString());
        Assert.True(updates > 3, $"{updates} streamed updates");

        // Without MaxOutputTokens a chat answer runs as far as the context allows, as OpenAI's does (it was cut at 16 tokens).
        var unlimited = await chat.GetResponseAsync(Prompt, new ChatOptions { Temperature = 0 });
        Assert.True(unlimited.Usage!.OutputTokenCount > 16, $"{unlimited.Usage.OutputTokenCount} tokens, finish reason {unlimited.FinishReason}: {unlimited.Text}");

        // /v1/completions over plain HTTP: n, logprobs, stop, usage; streaming; a bad request.
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var many = await Post(http, new { prompt = Prompt, max_tokens = 8, n = 3, temperature = 1.0, logprobs = 2, seed = 7 });
        var choices = many["choices"]!.AsArray();
        Assert.Equal(3, choices.Count);
        Assert.All(choices, c =>
        {
            var lp = c!["logprobs"]!;
            Assert.Equal(c["text"]!.GetValue<string>(), string.Concat(lp["tokens"]!.AsArray().Select(t => t!.GetValue<string>())));
            Assert.All(lp["top_logprobs"]!.AsArray(), top => Assert.InRange(top!.AsObject().Count, 1, 2));
        });
        Assert.Equal(choices.Sum(c => c!["logprobs"]!["tokens"]!.AsArray().Count), many["usage"]!["completion_tokens"]!.GetValue<int>());

        var greedy = await Post(http, new { prompt = Prompt, max_tokens = 40, temperature = 0 });
        var greedyText = greedy["choices"]![0]!["text"]!.GetValue<string>();
        int dot = greedyText.IndexOf('.');
        Assert.True(dot > 0, $"greedy text without a '.': {greedyText}");
        var stopped = (await Post(http, new { prompt = Prompt, max_tokens = 40, temperature = 0, stop = "." }))["choices"]![0]!;
        Assert.Equal(greedyText[..dot], stopped["text"]!.GetValue<string>());
        Assert.Equal("stop", stopped["finish_reason"]!.GetValue<string>());

        using var sse = await http.PostAsJsonAsync("/v1/completions", new { prompt = Prompt, max_tokens = 40, temperature = 0, stream = true });
        Assert.Equal("text/event-stream", sse.Content.Headers.ContentType!.MediaType);
        var events = (await sse.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        Assert.Equal(greedyText, string.Concat(events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!["choices"]![0]!["text"]!.GetValue<string>())));

        using var bad = await http.PostAsJsonAsync("/v1/completions", new { prompt = Prompt, temperature = 5 });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("temperature", JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
    }

    [SharedDataFact]
    public async Task ConcurrentRequestsAreBatchedIntoFewGenerationCalls()
    {
        var server = shared.Server;
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var before = await http.GetFromJsonAsync<JsonObject>("/health");
        var chat = server.ChatClient();
        var answers = await Task.WhenAll(Enumerable.Range(0, 16).Select(i =>
            chat.GetResponseAsync($"Tom had {i} red balls.", new ChatOptions { Temperature = 0.8f, MaxOutputTokens = 16 })));
        var after = await http.GetFromJsonAsync<JsonObject>("/health");
        Assert.All(answers, a => Assert.True(a.Usage!.OutputTokenCount > 0));
        long calls = after!["calls"]!.GetValue<long>() - before!["calls"]!.GetValue<long>();
        long rows = after["rows"]!.GetValue<long>() - before["rows"]!.GetValue<long>();
        Assert.Equal(16, rows);
        Assert.True(calls < 16, $"16 concurrent requests took {calls} generation calls: no batching");
    }

    /// <summary>
    /// Concurrent requests at temperatures of their own (the black-box extractor jitters every generation request's) share
    /// generation calls, each row sampled at its own temperature: they used to be grouped by temperature, one call per
    /// request. A greedy request and a tiny-temperature one among them still get greedy's text.
    /// </summary>
    [SharedDataFact]
    public async Task RequestsAtTemperaturesOfTheirOwnShareACall_AndAGreedyOneAmongThemGetsGreedysText()
    {
        var server = shared.Server;
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var chat = server.ChatClient();
        const string prompt = "Tom had a red ball.";
        var greedy = (await chat.GetResponseAsync(prompt, new ChatOptions { Temperature = 0, MaxOutputTokens = 16 })).Text;
        var before = await Health(http);
        var answers = await Task.WhenAll(Enumerable.Range(0, 16).Select(i =>
            chat.GetResponseAsync(prompt, new ChatOptions { Temperature = i switch { 0 => 0f, 1 => 1e-30f, _ => 0.8f + 0.01f * i }, MaxOutputTokens = 16 })));
        var after = await Health(http);
        Assert.Equal(16, after.Rows - before.Rows);
        Assert.True(after.Calls - before.Calls < 16, $"16 concurrent requests at their own temperatures took {after.Calls - before.Calls} generation calls: no batching");
        Assert.Equal(greedy, answers[0].Text);
        Assert.Equal(greedy, answers[1].Text);
        Assert.All(answers, a => Assert.True(a.Usage!.OutputTokenCount > 0));
    }

    [SharedDataFact]
    public async Task ASeededRequestGetsItsOwnAnswerBesideOthers_AndNoRequestShortensAnother()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        // Sampled with a seed: alone or beside two copies of itself in one batching window, the same text.
        var seeded = new { prompt = Prompt, max_tokens = 24, temperature = 1.0, seed = 7 };
        string Text(JsonObject r) => r["choices"]![0]!["text"]!.GetValue<string>();
        string alone = Text(await Post(http, seeded));
        var together = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Post(http, seeded)));
        Assert.All(together, r => Assert.Equal(alone, Text(r)));

        // A prompt that leaves no room for its max_tokens is refused (it used to shorten every row of its batch).
        var longPrompt = string.Concat(Enumerable.Repeat("Tom had a big red ball and he liked to play with it. ", 26));
        var (status, error) = await PostRaw(http, "/v1/completions", new JsonObject { ["prompt"] = longPrompt, ["max_tokens"] = 60 }.ToJsonString());
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Matches(@"^The prompt has \d+ tokens and max_tokens is 60; together they must fit the model's context of 512 tokens\.$", error);
    }

    /// <summary>
    /// A request's n rows are generated in one call, whatever is queued beside it: a seeded request split over two calls
    /// (the batch's row limit reached in the middle of it) drew its seed twice, so its choices repeated and its answer
    /// depended on the other clients of the moment. Here the batch holds 4 rows and the window is long enough to fill it.
    /// </summary>
    [SharedDataFact]
    public async Task ASeededRequestIsNeverSplitOverTwoCalls()
    {
        using var server = TeacherServerProcess.Start(batchWindowMs: 500, "--MaxBatchRows", "4");
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        List<string> Texts(JsonObject r) => r["choices"]!.AsArray().Select(c => c!["text"]!.GetValue<string>()).ToList();

        // More choices than a batch holds: one call of their own, so no choice repeats another.
        var eight = Texts(await Post(http, new { prompt = Prompt, max_tokens = 10, temperature = 1.0, seed = 3, n = 8 }));
        Assert.Equal(8, eight.Distinct().Count());

        // Behind another client's three rows (4 rows a batch): the same three choices as alone.
        var seeded = new { prompt = Prompt, max_tokens = 10, temperature = 1.0, seed = 7, n = 3 };
        var alone = Texts(await Post(http, seeded));
        var other = Post(http, new { prompt = "Tom had a ball.", max_tokens = 10, temperature = 1.0, n = 3 });
        await Task.Delay(100);
        var behind = Texts(await Post(http, seeded));
        await other;
        Assert.Equal(alone, behind);
    }

    [SharedDataFact]
    public async Task AnotherModelsNameADuplicateKeyAndAFractionalCountAreClientErrors_AndLogProbsCoverTheReturnedText()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        var (status, error) = await PostRaw(http, "/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}""");
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("The model 'gpt-4o' does not exist here; this server serves 'stories260K'.", error);
        (status, error) = await PostRaw(http, "/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"n":1,"n":2}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("'n' is given twice.", error);
        (status, error) = await PostRaw(http, "/v1/completions", """{"prompt":"Hi","n":1.7}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("'n' must be a whole number, found 1.7.", error);

        // Cut at a stop sequence, the text and its tokens' texts agree (the stop's tokens are not reported).
        using var response = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "stories260K", messages = new[] { new { role = "user", content = "Once upon a time" } },
            max_tokens = 40, temperature = 0, logprobs = true, top_logprobs = 2, stop = new[] { "girl" },
        });
        var choice = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["choices"]![0]!;
        var content = choice["message"]!["content"]!.GetValue<string>();
        var tokens = string.Concat(choice["logprobs"]!["content"]!.AsArray().Select(t => t!["token"]!.GetValue<string>()));
        Assert.EndsWith("little ", content); // greedy stories260K: ", there was a little girl ..." cut at "girl"
        Assert.Equal(content, tokens);
    }

    /// <summary>
    /// What OpenAI's clients meet in a request they got wrong: status 400 and OpenAI's error object naming the parameter,
    /// never a 500 or a value quietly replaced by its default. Among them: a body that is no JSON or no object, a missing
    /// or malformed <c>messages</c>/<c>prompt</c>, values of the wrong JSON type (a number sent as a string or in an
    /// array used to fall back to the default unnoticed), values out of range, a key given twice (answered with .NET's
    /// "An item with the same key has already been added" and no parameter), and a prompt longer than the context.
    /// </summary>
    [SharedDataFact]
    public async Task MalformedMistypedAndOutOfRangeRequestsAre400sNamingTheParameter()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        const string m = "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]";
        var longPrompt = string.Concat(Enumerable.Repeat("Tom had a big red ball. ", 200));
        foreach (var (path, json, param, message) in new (string, string, string?, string?)[]
        {
            ("/v1/chat/completions", "{\"messages\":", null, null),
            ("/v1/chat/completions", "[]", null, "The request body must be a JSON object."),
            ("/v1/chat/completions", "{}", "messages", null),
            ("/v1/chat/completions", "{\"messages\":\"Hi\"}", "messages", null),
            ("/v1/chat/completions", "{\"messages\":[]}", "messages", null),
            ("/v1/chat/completions", "{\"messages\":[\"Hi\"]}", "messages", "messages[0] must be an object with 'role' and 'content'."),
            ("/v1/chat/completions", "{\"messages\":[{\"role\":5,\"content\":\"Hi\"}]}", "messages", "'messages[0].role' must be a string, found 5."),
            ("/v1/chat/completions", "{" + m + ",\"temperature\":\"hot\"}", "temperature", "'temperature' must be a number, found a string."),
            ("/v1/chat/completions", "{" + m + ",\"temperature\":[0.2]}", "temperature", "'temperature' must be a number, found an array."),
            ("/v1/chat/completions", "{" + m + ",\"temperature\":-0.5}", "temperature", null),
            ("/v1/chat/completions", "{" + m + ",\"temperature\":1e400}", "temperature", null),
            ("/v1/chat/completions", "{" + m + ",\"top_p\":0}", "top_p", null),
            ("/v1/chat/completions", "{" + m + ",\"top_p\":1.5}", "top_p", null),
            ("/v1/chat/completions", "{" + m + ",\"max_tokens\":-1}", "max_tokens", null),
            ("/v1/chat/completions", "{" + m + ",\"max_tokens\":1000000000}", "max_tokens", null),
            ("/v1/chat/completions", "{" + m + ",\"max_completion_tokens\":0}", "max_completion_tokens", null),
            ("/v1/chat/completions", "{" + m + ",\"n\":17}", "n", null), // MaxChoices 16
            ("/v1/chat/completions", "{" + m + ",\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs", null),
            ("/v1/chat/completions", "{" + m + ",\"top_logprobs\":2}", "top_logprobs", null),
            ("/v1/chat/completions", "{" + m + ",\"logprobs\":\"yes\"}", "logprobs", "'logprobs' must be a boolean, found a string."),
            ("/v1/chat/completions", "{" + m + ",\"seed\":1.5}", "seed", "'seed' must be an integer, found 1.5."),
            ("/v1/chat/completions", "{" + m + ",\"stop\":[1]}", "stop", null),
            ("/v1/chat/completions", "{" + m + ",\"stop\":5}", "stop", null),
            ("/v1/chat/completions", "{" + m + ",\"stream\":\"true\"}", "stream", null),
            ("/v1/chat/completions", "{" + m + ",\"stream_options\":true}", "stream_options", null),
            ("/v1/chat/completions", "{" + m + ",\"model\":5}", "model", null),
            ("/v1/chat/completions", "{" + m + ",\"n\":1,\"n\":2}", "n", "'n' is given twice."),
            ("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"role\":\"system\",\"content\":\"Hi\"}]}", "messages", "'messages' holds the key 'role' twice."),
            ("/v1/completions", "{}", "prompt", null),
            ("/v1/completions", "{\"prompt\":5}", "prompt", null),
            ("/v1/completions", "{\"prompt\":\"Hi\",\"logprobs\":21}", "logprobs", null),
            ("/v1/completions", "{\"prompt\":\"Hi\",\"logprobs\":true}", "logprobs", "'logprobs' must be a number, found true."),
            ("/v1/completions", new JsonObject { ["prompt"] = longPrompt }.ToJsonString(), "prompt", null),
            ("/v1/chat/completions", new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = longPrompt }) }.ToJsonString(), "messages", null),
        })
        {
            var (status, error) = await PostForError(http, path, json);
            var shown = $"{path} {json[..Math.Min(json.Length, 80)]}: {status} {error.ToJsonString()}";
            Assert.True(status == HttpStatusCode.BadRequest, shown);
            Assert.True(error["type"]?.GetValue<string>() == "invalid_request_error", shown);
            Assert.True(error["param"]?.GetValue<string>() == param, shown);
            Assert.False(string.IsNullOrWhiteSpace(error["message"]?.GetValue<string>()), shown);
            if (message is not null) Assert.True(error["message"]!.GetValue<string>() == message, shown);
            if (json.Contains(longPrompt[..40])) Assert.True(error["code"]?.GetValue<string>() == "context_length_exceeded", shown);
        }
    }

    /// <summary>
    /// A body far longer than any prompt the context holds was parsed whole and its prompt encoded before the length check
    /// (a 24 MB one: 26 s of CPU and the process from 0.2 to 1.7 GB, kept after the 400). It is a 413 before it is read
    /// now, sent with a length or in chunks; a prompt just over the context is still the 400 naming the context.
    /// </summary>
    [SharedDataFact]
    public async Task ABodyLongerThanTheContextCanHoldIsA413BeforeItIsRead()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        var huge = new JsonObject { ["prompt"] = string.Concat(Enumerable.Repeat("Tom had a big red ball. ", 12_000)), ["max_tokens"] = 2 }.ToJsonString();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var (status, error) = await PostForError(http, "/v1/completions", huge);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        Assert.Equal($"The request body has {huge.Length} bytes; at most {256 * 512 + 65536} are accepted (the model's context is 512 tokens).", error["message"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        // In chunks (no Content-Length): cut off at the bound, and the connection closed under the upload, so the client
        // sees the 413 or, when the close comes while it still writes, a broken pipe (as the web API's test). Never an answer.
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        request.Headers.TransferEncodingChunked = true;
        try
        {
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.RequestEntityTooLarge, $"{response.StatusCode}: {text}");
            Assert.StartsWith("The request body has more bytes than that; at most", JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>());
        }
        catch (HttpRequestException cut) when (cut.InnerException is IOException) { }
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"took {watch.Elapsed}");
        // Just over the context: the 400 that names it, as before.
        (status, error) = await PostForError(http, "/v1/completions", new JsonObject { ["prompt"] = string.Concat(Enumerable.Repeat("Tom had a big red ball. ", 200)) }.ToJsonString());
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("context_length_exceeded", error["code"]!.GetValue<string>());
    }

    /// <summary>
    /// An OpenAI parameter the server cannot honour is refused with 400 naming it, not ignored: a client that asked for a
    /// frequency penalty, a logit bias, its prompt echoed or a JSON format would take the plain answer for what it asked
    /// for. Their neutral values (what leaves them without effect) are served.
    /// </summary>
    [SharedDataFact]
    public async Task ParametersTheServerCannotHonourAre400sNotIgnored()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        const string m = "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":4";
        const string p = "\"prompt\":\"Hi\",\"max_tokens\":4";
        foreach (var (path, json, param) in new[]
        {
            ("/v1/chat/completions", "{" + m + ",\"frequency_penalty\":1.5}", "frequency_penalty"),
            ("/v1/chat/completions", "{" + m + ",\"presence_penalty\":-1}", "presence_penalty"),
            ("/v1/chat/completions", "{" + m + ",\"logit_bias\":{\"5\":100}}", "logit_bias"),
            ("/v1/chat/completions", "{" + m + ",\"response_format\":{\"type\":\"json_object\"}}", "response_format"),
            ("/v1/chat/completions", "{" + m + ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", "tools"),
            ("/v1/chat/completions", "{" + m + ",\"tool_choice\":\"required\"}", "tool_choice"),
            ("/v1/completions", "{" + p + ",\"echo\":true}", "echo"),
            ("/v1/completions", "{" + p + ",\"best_of\":3}", "best_of"),
            ("/v1/completions", "{" + p + ",\"suffix\":\" the end\"}", "suffix"),
        })
        {
            var (status, error) = await PostForError(http, path, json);
            var shown = $"{path} {json}: {status} {error.ToJsonString()}";
            Assert.True(status == HttpStatusCode.BadRequest, shown);
            Assert.True(error["param"]?.GetValue<string>() == param, shown);
            Assert.StartsWith($"'{param}' is not served here", error["message"]!.GetValue<string>());
        }
        foreach (var (path, json) in new[]
        {
            ("/v1/chat/completions", "{" + m + ",\"frequency_penalty\":0,\"presence_penalty\":0.0,\"logit_bias\":{},\"tools\":[],\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"}}"),
            ("/v1/completions", "{" + p + ",\"echo\":false,\"best_of\":2,\"n\":2,\"suffix\":\"\",\"logit_bias\":null}"),
        })
        {
            using var response = await http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
            Assert.True(response.IsSuccessStatusCode, $"{path} {json}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>
    /// A generation that fails in the teacher answers 500 with OpenAI's server_error object whose message is the reason in
    /// one line: TorchSharp's message went out whole, libtorch's C++ backtrace (kilobytes of stack frames) included. The
    /// teacher here is stories260K with its final norm's weights raised to 3e38: finite, so the load takes them, as it
    /// would a badly converted checkpoint's, but its logits overflow to ±∞ and sampling meets NaN probabilities.
    /// </summary>
    [SharedDataFact]
    public async Task AGenerationThatFailsInTheTeacherIsA500WithItsReasonInOneLine()
    {
        using var folder = new TempDir("retrikt-teacherserver-");
        var overflowing = folder.File("stories260K.bin");
        var bytes = File.ReadAllBytes(TeacherServerProcess.Stories260K);
        int dim = BitConverter.ToInt32(bytes, 0), heads = BitConverter.ToInt32(bytes, 12), vocab = BitConverter.ToInt32(bytes, 20), seqLen = BitConverter.ToInt32(bytes, 24);
        // The legacy export ends with rms_final [dim], freq_cis [2, seq_len, head_size / 2] and, for an untied head, wcls.
        long finalNorm = bytes.Length - 4L * (dim + seqLen * (dim / heads) + (vocab < 0 ? (long)-vocab * dim : 0));
        for (int i = 0; i < dim; i++) BitConverter.TryWriteBytes(bytes.AsSpan((int)finalNorm + 4 * i), 3e38f);
        File.WriteAllBytes(overflowing, bytes);
        File.Copy(Path.Combine(Path.GetDirectoryName(TeacherServerProcess.Stories260K)!, "tok512.bin"), folder.File("tok512.bin"));
        // Its start-up generation fails the same way: one line, the reason without libtorch's stack frames, exit code 1.
        var (exit, _, startError) = TeacherServerProcess.RunToExit("--ModelPath", overflowing, "--urls", "http://127.0.0.1:0");
        Assert.True(exit == 1, $"exit code {exit}: {startError}");
        Assert.Equal("error: probability tensor contains either `inf`, `nan` or element < 0", Assert.Single(startError.Split('\n', StringSplitOptions.RemoveEmptyEntries)));

        using var server = TeacherServerProcess.Start(5, "--ModelPath", overflowing, "--WarmUp", "false");
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        using var response = await http.PostAsync("/v1/completions", new StringContent("""{"prompt":"Hi","max_tokens":4,"temperature":1}""", Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.InternalServerError, $"{response.StatusCode}: {text}");
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal("server_error", error["type"]!.GetValue<string>());
        var message = error["message"]!.GetValue<string>();
        Assert.StartsWith("The teacher failed to generate: ", message);
        Assert.DoesNotContain('\n', message);
        Assert.True(message.Length < 300, message);
    }

    /// <summary>
    /// A temperature of 1e-40 overflowed the teacher's float32 logits (logits / T) and the request failed with a 500; it
    /// now samples as the limit of a small temperature does, greedy's tokens.
    /// </summary>
    [SharedDataFact]
    public async Task ATinyTemperatureGivesGreedysText()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        var tiny = await Post(http, new { prompt = Prompt, max_tokens = 12, temperature = 1e-40, seed = 1 });
        var greedy = await Post(http, new { prompt = Prompt, max_tokens = 12, temperature = 0 });
        Assert.Equal(greedy["choices"]![0]!["text"]!.GetValue<string>(), tiny["choices"]![0]!["text"]!.GetValue<string>());
    }

    /// <summary>
    /// A stop sequence that spans two tokens ("e gi" across " little" and " girl") ends the text before it, in the
    /// plain answer, its log-probability tokens (the last one cut to what the text keeps) and the stream alike.
    /// </summary>
    [SharedDataFact]
    public async Task AStopSequenceAcrossATokenBoundaryCutsTextTokensAndStreamAlike()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        object Body(string[]? stop, bool stream = false) => new
        {
            messages = new[] { new { role = "user", content = "Once upon a time" } }, max_tokens = 40, temperature = 0,
            logprobs = !stream, top_logprobs = stream ? (int?)null : 1, stop, stream,
        };
        async Task<JsonNode> Chat(object body)
        {
            using var response = await http.PostAsJsonAsync("/v1/chat/completions", body);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            return JsonNode.Parse(text)!;
        }
        var whole = (await Chat(Body(null)))["choices"]![0]!["message"]!["content"]!.GetValue<string>();
        int at = whole.IndexOf("e gi", StringComparison.Ordinal);
        Assert.True(at > 0, $"greedy stories260K without 'e gi': {whole}");

        var stopped = await Chat(Body(["e gi"]));
        var choice = stopped["choices"]![0]!;
        var content = choice["message"]!["content"]!.GetValue<string>();
        Assert.Equal(whole[..at], content);
        Assert.Equal("stop", choice["finish_reason"]!.GetValue<string>());
        var tokens = choice["logprobs"]!["content"]!.AsArray().Select(t => t!["token"]!.GetValue<string>()).ToList();
        Assert.Equal(content, string.Concat(tokens));
        // usage counts the tokens generated, the stop's included; the answer shows fewer.
        Assert.True(stopped["usage"]!["completion_tokens"]!.GetValue<int>() > tokens.Count, stopped["usage"]!.ToJsonString());

        using var sse = await http.PostAsJsonAsync("/v1/chat/completions", Body(["e gi"], stream: true));
        var events = (await sse.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!["choices"]![0]!).ToList();
        Assert.Equal(content, string.Concat(chunks.Select(c => c["delta"]!["content"]?.GetValue<string>())));
        Assert.Equal("stop", chunks[^1]["finish_reason"]!.GetValue<string>());
    }

    /// <summary>
    /// A client that gives up (a timeout, a closed stream) while its rows wait for their batch frees them: they are not
    /// generated (the teacher's time and the batch's rows go to clients still waiting), /health counts them as abandoned,
    /// and the next request is served as usual. The server's long batching window keeps them waiting long enough.
    /// </summary>
    [SharedDataFact]
    public async Task AClientThatLeavesBeforeItsBatchRunsGetsNoRowsGenerated()
    {
        using var server = TeacherServerProcess.Start(batchWindowMs: 5000);
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var before = await Health(http);
        // Both at once, and given time to arrive on a loaded machine (at 250 ms, one after the other, the first request
        // could be cancelled before it reached the server); both leave well inside the window.
        using (var gone = new CancellationTokenSource(TimeSpan.FromMilliseconds(1500)))
            foreach (var left in new object[] { new { prompt = Prompt, max_tokens = 8 }, new { prompt = Prompt, max_tokens = 8, n = 3, stream = true } }
                         .Select(body => Assert.ThrowsAnyAsync<OperationCanceledException>(() => http.PostAsJsonAsync("/v1/completions", body, gone.Token))).ToList())
                await left;
        var after = await Health(http);
        for (var deadline = DateTime.UtcNow.AddSeconds(15); after.Abandoned - before.Abandoned < 4 && DateTime.UtcNow < deadline; after = await Health(http))
            await Task.Delay(100);
        Assert.Equal(4, after.Abandoned - before.Abandoned); // 1 + n = 3 rows
        Assert.Equal(before.Rows, after.Rows);
        Assert.Equal(before.Calls, after.Calls);

        var served = await Post(http, new { prompt = Prompt, max_tokens = 8 });
        Assert.False(string.IsNullOrEmpty(served["choices"]![0]!["text"]!.GetValue<string>()));
        Assert.Equal(before.Rows + 1, (await Health(http)).Rows);
    }

    /// <summary>
    /// A generation call already running stops at its next token once every client in it has left: its rows are counted
    /// as abandoned, none as generated, and the teacher is free for the next client at once. Sixteen rows of 500 tokens
    /// with a stop sequence take seconds on this 260K model (about 2 s on two busy cores), so the client leaves well before
    /// the call could end by itself; /health's <c>generating</c> says when the call has started.
    /// </summary>
    [SharedDataFact]
    public async Task AGenerationWhoseClientsAllLeaveStopsBeforeItsEnd()
    {
        using var server = TeacherServerProcess.Start();
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var before = await Health(http);
        using var leave = new CancellationTokenSource();
        var request = http.PostAsJsonAsync("/v1/completions", new { prompt = "Once upon a time", max_tokens = 500, n = 16, stop = new[] { "zqzq" } }, leave.Token);
        var running = await Health(http);
        for (var deadline = DateTime.UtcNow.AddSeconds(30); running.Generating == 0 && DateTime.UtcNow < deadline; running = await Health(http))
            await Task.Delay(10);
        Assert.Equal(16, running.Generating);
        leave.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request);

        var after = await Health(http);
        for (var deadline = DateTime.UtcNow.AddSeconds(15); after.Abandoned - before.Abandoned < 16 && DateTime.UtcNow < deadline; after = await Health(http))
            await Task.Delay(10);
        Assert.Equal(16, after.Abandoned - before.Abandoned);
        Assert.Equal(before.Rows, after.Rows);
        Assert.Equal(before.Calls, after.Calls);
        Assert.Equal(0, after.Generating);

        var served = await Post(http, new { prompt = Prompt, max_tokens = 8 });
        Assert.False(string.IsNullOrEmpty(served["choices"]![0]!["text"]!.GetValue<string>()));
        Assert.Equal(before.Rows + 1, (await Health(http)).Rows);
    }

    /// <summary>/health's counters; a counter missing from it fails the test, naming what the server sent.</summary>
    private static async Task<(long Calls, long Rows, long Abandoned, long Generating)> Health(HttpClient http)
    {
        var h = (await http.GetFromJsonAsync<JsonObject>("/health"))!;
        long Counter(string name) => h[name]?.GetValue<long>() ?? throw new Xunit.Sdk.XunitException($"/health has no '{name}': {h.ToJsonString()}");
        return (Counter("calls"), Counter("rows"), Counter("abandoned"), Counter("generating"));
    }

    private static async Task<(HttpStatusCode Status, string Error)> PostRaw(HttpClient http, string path, string json)
    {
        var (status, error) = await PostForError(http, path, json);
        return (status, error["message"]!.GetValue<string>());
    }

    /// <summary>Posts <paramref name="json"/> as is and returns the status and the response's <c>error</c> object (the body must be JSON with one).</summary>
    private static async Task<(HttpStatusCode Status, JsonObject Error)> PostForError(HttpClient http, string path, string json)
    {
        using var response = await http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.Content.Headers.ContentType?.MediaType == "application/json", $"{response.StatusCode}, not JSON: {text}");
        var error = JsonNode.Parse(text)!["error"] as JsonObject;
        Assert.True(error is not null, $"{response.StatusCode}, no 'error' object: {text}");
        return (response.StatusCode, error!);
    }

    private static async Task<JsonObject> Post(HttpClient http, object body)
    {
        using var response = await http.PostAsJsonAsync("/v1/completions", body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, text);
        return JsonNode.Parse(text)!.AsObject();
    }
}

/// <summary>The server tests start processes and load the CPU: they run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TeacherServerCollection : ICollectionFixture<SharedTeacherServer>
{
    public const string Name = "TeacherServer processes";
}
