using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;

namespace RetriKT.TeacherServer;

/// <summary>
/// The OpenAI-compatible endpoint over a TorchSharp teacher: <c>POST /v1/completions</c>, <c>POST /v1/chat/completions</c>
/// (both with <c>logprobs</c>, <c>n</c>, <c>temperature</c>, <c>top_p</c>, <c>max_tokens</c>, <c>stop</c>, <c>seed</c>
/// and <c>stream</c>), <c>GET /v1/models</c> and <c>GET /health</c>. Errors use OpenAI's <c>{"error": {...}}</c> shape
/// with status 400 for a request the server cannot serve as asked.
/// </summary>
public static class TeacherServerApp
{
    /// <summary>
    /// Builds the app from command-line arguments or configuration (section root: <see cref="TeacherServerOptions"/> names);
    /// <paramref name="configureBuilder"/> sees the builder first (logging filters, for example).
    /// </summary>
    public static WebApplication Build(string[] args, Action<TeacherServerOptions>? configure = null, Action<WebApplicationBuilder>? configureBuilder = null)
    {
        RetriKT.Samples.CommandLineSwitches.Check(args, [.. RetriKT.Samples.CommandLineSwitches.Of<TeacherServerOptions>()]);
        var builder = WebApplication.CreateBuilder(args);
        configureBuilder?.Invoke(builder);
        var options = new TeacherServerOptions();
        // A value that is not of its setting's type ("--BatchWindowMs five") is a bad setting (exit code 2), not a failed start.
        try { builder.Configuration.Bind(options); }
        catch (InvalidOperationException e) { throw new ArgumentException(e.Message, e); }
        configure?.Invoke(options);
        if (string.IsNullOrEmpty(options.ModelPath)) throw new ArgumentException("TeacherServer needs --ModelPath <Hugging Face directory | llama2.c .bin>.");
        if (options.BatchWindowMs < 0 || options.MaxBatchRows < 1 || options.MaxTokensLimit < 1 || options.MaxChoices < 1)
            throw new ArgumentException($"Invalid settings: BatchWindowMs {options.BatchWindowMs} (>= 0), MaxBatchRows {options.MaxBatchRows}, MaxTokensLimit {options.MaxTokensLimit}, MaxChoices {options.MaxChoices} (>= 1).");
        // Below 0 it was skipped (only a positive count is applied), and torch kept one thread per core without a word.
        if (options.Threads < 0) throw new ArgumentException($"Invalid setting: Threads {options.Threads} (>= 0; 0 keeps torch's default, one thread per core).");
        options.ModelId ??= Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(options.ModelPath));
        if (options.Threads > 0) TorchSharp.torch.set_num_threads(options.Threads);
        var device = TorchDevices.Resolve(options.GpuDeviceId, options.FallbackToCpu, warning => Console.Error.WriteLine(warning));
        var teacher = TeacherModel.Load(options.ModelPath, new TeacherLoadOptions { Device = device });
        builder.Services.AddSingleton(options);
        // Created by the container, so that disposing the host disposes it (its loop, then the teacher): an instance
        // handed in ready-made is never disposed by the container, and a host disposed in a process that goes on kept the
        // teacher's weights and a batching loop that still generated.
        builder.Services.AddSingleton(_ => new GenerationBatcher(teacher, options));
        var app = builder.Build();
        var batcher = app.Services.GetRequiredService<GenerationBatcher>();
        if (options.WarmUp) batcher.GenerateAsync(batcher.Encode("Once upon a time"), new SamplingKey(1, 1, 4, "", 1), 2, 2, default).GetAwaiter().GetResult();

        app.MapGet("/health", () => Results.Json(new
        {
            status = "ok", model = options.ModelId, calls = batcher.Calls, rows = batcher.Rows, abandoned = batcher.Abandoned, generating = batcher.Generating,
        }));
        app.MapGet("/v1/models", () => Results.Json(new
        {
            @object = "list",
            data = new[] { new { id = options.ModelId, @object = "model", created = 0, owned_by = "retrikt" } },
        }));
        app.MapPost("/v1/completions", (HttpContext http) => Serve(http, batcher, options, chat: false));
        app.MapPost("/v1/chat/completions", (HttpContext http) => Serve(http, batcher, options, chat: true));
        return app;
    }

    /// <summary>The addresses Kestrel bound (after start), for a port of 0.</summary>
    public static IEnumerable<string> Addresses(WebApplication app)
        => app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];

    private sealed class BadRequest(string message, string? param, int status = StatusCodes.Status400BadRequest, string? code = null) : Exception(message)
    {
        public string? Param { get; } = param;
        public int Status { get; } = status;
        public string? Code { get; } = code;
    }

    private sealed record ParsedRequest(int[] PromptIds, SamplingKey Key, int N, int TopLogProbs, bool Stream, bool IncludeUsage);

    private static async Task Serve(HttpContext http, GenerationBatcher batcher, TeacherServerOptions options, bool chat)
    {
        // A body is parsed whole and its prompt encoded before the prompt's length is checked: under Kestrel's own bound
        // (30 MB) one request of a 24 MB prompt took 26 s of CPU and the process from 0.2 to 1.7 GB, kept after it was
        // refused as longer than the context. Bound it by the longest prompt the context can hold.
        long maxBodyBytes = MaxRequestBodyBytes(batcher.Teacher);
        string TooLarge(long? length) => $"The request body has {(length is { } n ? $"{n} bytes" : "more bytes than that")}; at most {maxBodyBytes} are accepted " +
                                         $"(the model's context is {batcher.Teacher.Config.MaxPositions} tokens).";
        if (http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
            bodySize.MaxRequestBodySize = maxBodyBytes;   // a body sent in chunks is cut off here
        if (http.Request.ContentLength > maxBodyBytes)
        {
            await Error(http, TooLarge(http.Request.ContentLength.Value), null, StatusCodes.Status413PayloadTooLarge);
            return;
        }
        ParsedRequest request;
        try
        {
            using var document = await JsonDocument.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted);
            request = Parse(RequestObject(document.RootElement), batcher, options, chat);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await Error(http, TooLarge(null), null, e.StatusCode);
            return;
        }
        catch (Exception e) when (e is BadRequest or JsonException or FormatException or InvalidOperationException or ArgumentException)
        {
            var bad = e as BadRequest;
            await Error(http, e.Message, bad?.Param, bad?.Status ?? StatusCodes.Status400BadRequest, bad?.Code);
            return;
        }

        Task<RowResult[]> generation;
        try { generation = batcher.GenerateAsync(request.PromptIds, request.Key, request.N, request.TopLogProbs, http.RequestAborted); }
        // The prompt (with max_tokens) does not fit the context: OpenAI's param and code for it.
        catch (ArgumentException e) { await Error(http, e.Message, chat ? "messages" : "prompt", code: "context_length_exceeded"); return; }
        RowResult[] rows;
        try { rows = await generation; }
        // The teacher failed (out of device memory, say): OpenAI's shape for a server error, not an empty 500, so a client
        // (and its retry policy) reads what happened. A client that left gets nothing (the cancellation propagates).
        catch (Exception e) when (e is not OperationCanceledException)
        {
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(TeacherServerApp)).LogError(e, "Generation failed");
            // The log has the whole exception (libtorch's C++ backtrace included, kilobytes of frames); the client gets the
            // reason in one line, as the server's start-up failures say it.
            await Error(http, $"The teacher failed to generate: {RetriKT.MLNet.ModelFiles.Describe(e)}", null, StatusCodes.Status500InternalServerError, type: "server_error");
            return;
        }

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var usage = new JsonObject
        {
            ["prompt_tokens"] = request.PromptIds.Length, ["completion_tokens"] = rows.Sum(r => r.CompletionTokens),
            ["total_tokens"] = request.PromptIds.Length + rows.Sum(r => r.CompletionTokens),
        };
        if (!request.Stream)
        {
            var choices = new JsonArray(rows.Select((r, i) => (JsonNode)(chat
                ? new JsonObject
                {
                    ["index"] = i, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = r.Text },
                    ["logprobs"] = r.Tokens is null ? null : ChatLogProbs(r.Tokens), ["finish_reason"] = r.FinishReason,
                }
                : new JsonObject
                {
                    ["index"] = i, ["text"] = r.Text, ["logprobs"] = r.Tokens is null ? null : CompletionLogProbs(r.Tokens),
                    ["finish_reason"] = r.FinishReason,
                })).ToArray());
            await WriteJson(http, new JsonObject
            {
                ["id"] = id, ["object"] = chat ? "chat.completion" : "text_completion", ["created"] = created,
                ["model"] = options.ModelId, ["choices"] = choices, ["usage"] = usage,
            });
            return;
        }

        // Server-sent events: the rows are generated in one batched call, then sent token by token in OpenAI's chunk format.
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        JsonObject Chunk(JsonArray choices) => new()
        {
            ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created,
            ["model"] = options.ModelId, ["choices"] = choices,
        };
        for (int i = 0; i < rows.Length; i++)
        {
            var r = rows[i];
            if (chat) await Event(http, Chunk([new JsonObject { ["index"] = i, ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = "" }, ["logprobs"] = null, ["finish_reason"] = null }]));
            var pieces = r.Tokens?.Select(t => t.Token).ToList() ?? SplitForStreaming(r.Text);
            int sent = 0;
            for (int t = 0; t < pieces.Count && sent < r.Text.Length; t++)
            {
                // Never stream past the returned text (a stop sequence was cut from it).
                var piece = pieces[t].Length <= r.Text.Length - sent ? pieces[t] : r.Text[sent..];
                sent += piece.Length;
                var token = r.Tokens is null ? null : new List<TokenLogProb> { r.Tokens[t] };
                await Event(http, Chunk([chat
                    ? new JsonObject { ["index"] = i, ["delta"] = new JsonObject { ["content"] = piece }, ["logprobs"] = token is null ? null : ChatLogProbs(token), ["finish_reason"] = null }
                    : new JsonObject { ["index"] = i, ["text"] = piece, ["logprobs"] = token is null ? null : CompletionLogProbs(token), ["finish_reason"] = null }]));
            }
            await Event(http, Chunk([chat
                ? new JsonObject { ["index"] = i, ["delta"] = new JsonObject(), ["logprobs"] = null, ["finish_reason"] = r.FinishReason }
                : new JsonObject { ["index"] = i, ["text"] = "", ["logprobs"] = null, ["finish_reason"] = r.FinishReason }]));
        }
        if (request.IncludeUsage)
        {
            var last = Chunk([]);
            last["usage"] = usage;
            await Event(http, last);
        }
        await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
    }

    /// <summary>
    /// The longest body a request the context can hold may have: 256 bytes per token of the context (a long token, each
    /// character escaped in JSON as <c>\uXXXX</c>), plus 64 KiB for the other fields.
    /// </summary>
    private static long MaxRequestBodyBytes(TeacherModel teacher) => 256L * teacher.Config.MaxPositions + 65536;

    /// <summary>
    /// The request body as a JSON object. A key given twice (<c>"n": 1, "n": 2</c>) is refused naming the parameter that
    /// holds it: which value the client meant is a guess, and System.Text.Json's object answered it with a bare
    /// "An item with the same key has already been added" and no parameter.
    /// </summary>
    private static JsonObject RequestObject(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new BadRequest("The request body must be a JSON object.", null);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject())
        {
            if (!seen.Add(property.Name)) throw new BadRequest($"'{property.Name}' is given twice.", property.Name);
            if (RepeatedKey(property.Value) is { } key) throw new BadRequest($"'{property.Name}' holds the key '{key}' twice.", property.Name);
        }
        return JsonObject.Create(root.Clone())!;
    }

    /// <summary>The first key that an object in <paramref name="value"/> (at any depth) holds twice, or null.</summary>
    private static string? RepeatedKey(JsonElement value)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Object:
                var seen = new HashSet<string>(StringComparer.Ordinal);
                foreach (var property in value.EnumerateObject())
                    if (!seen.Add(property.Name)) return property.Name;
                    else if (RepeatedKey(property.Value) is { } inner) return inner;
                return null;
            case JsonValueKind.Array:
                foreach (var item in value.EnumerateArray())
                    if (RepeatedKey(item) is { } inner) return inner;
                return null;
            default:
                return null;
        }
    }

    private static ParsedRequest Parse(JsonObject body, GenerationBatcher batcher, TeacherServerOptions options, bool chat)
    {
        // Another model's name is a misrouted client: answered as this teacher, its samples would pass for that model's.
        if (Read<string>(body["model"], "model", "a string", out var model) && model != options.ModelId)
            throw new BadRequest($"The model '{model}' does not exist here; this server serves '{options.ModelId}'.", "model",
                StatusCodes.Status404NotFound, "model_not_found");
        string prompt;
        if (chat)
        {
            var messages = body["messages"] as JsonArray ?? throw new BadRequest("'messages' must be a non-empty array.", "messages");
            if (messages.Count == 0) throw new BadRequest("'messages' must be a non-empty array.", "messages");
            var parts = messages.Select((m, i) =>
            {
                if (m is not JsonObject) throw new BadRequest($"messages[{i}] must be an object with 'role' and 'content'.", "messages");
                if (!Read<string>(m["role"], "messages", "a string", out var role, $"messages[{i}].role")) throw new BadRequest($"messages[{i}] has no 'role'.", "messages");
                return (Role: role, Content: Content(m!["content"], i));
            }).ToList();
            prompt = options.ChatFormat == ChatPromptFormat.Plain
                ? string.Join("\n", parts.Select(p => p.Content))
                : string.Concat(parts.Select(p => $"{p.Role}: {p.Content}\n")) + "assistant:";
        }
        else
        {
            prompt = body["prompt"] switch
            {
                JsonValue v when v.TryGetValue<string>(out var s) => s,
                JsonArray { Count: 1 } a when a[0] is JsonValue v1 && v1.TryGetValue<string>(out var s1) => s1,
                JsonArray => throw new BadRequest("'prompt' as a list is supported with one string only; send one request per prompt (they are batched anyway).", "prompt"),
                _ => throw new BadRequest("'prompt' must be a string.", "prompt"),
            };
        }

        double temperature = Number(body, "temperature", 1, 0, 2);
        double topP = Number(body, "top_p", 1, double.Epsilon, 1);
        string maxTokensName = chat && body["max_completion_tokens"] is not null ? "max_completion_tokens" : "max_tokens";
        // Without a limit, a chat completion runs as far as the context and MaxTokensLimit allow, as OpenAI's does (a chat
        // client that sets none got 16 tokens, cut mid-sentence); a legacy completion keeps OpenAI's default of 16.
        int? maxTokens = chat && body[maxTokensName] is null ? null : Integer(body, maxTokensName, 16, 1, options.MaxTokensLimit);
        int n = Integer(body, "n", 1, 1, options.MaxChoices);
        foreach (var (name, neutral) in Unserved)
            if (body[name] is { } value && !neutral(value, n))
                throw new BadRequest($"'{name}' is not served here, found {Shown(value)}: the teacher would answer without it. Leave it out or send its neutral value.", name);
        long? seed = Read<long>(body["seed"], "seed", "an integer", out var seedValue) ? seedValue : null;
        var stops = body["stop"] switch
        {
            null => [],
            JsonValue v when v.TryGetValue<string>(out var s) => [s],
            JsonArray a => a.Select(x => Read<string>(x, "stop", "a string or an array of strings", out var stop) ? stop : "").Where(x => x.Length > 0).ToList(),
            _ => throw new BadRequest("'stop' must be a string or an array of strings.", "stop"),
        };
        if (stops.Count > 4) throw new BadRequest($"'stop' holds {stops.Count} sequences; at most 4.", "stop");
        int topLogProbs;
        if (chat)
        {
            bool wanted = Read<bool>(body["logprobs"], "logprobs", "a boolean", out var logprobs) && logprobs;
            topLogProbs = wanted ? Integer(body, "top_logprobs", 0, 0, 20) : -1;
            if (!wanted && body["top_logprobs"] is not null) throw new BadRequest("'top_logprobs' needs 'logprobs': true.", "top_logprobs");
        }
        else topLogProbs = body["logprobs"] is null ? -1 : Integer(body, "logprobs", 0, 0, 20);
        bool stream = Read<bool>(body["stream"], "stream", "a boolean", out var streamValue) && streamValue;
        var streamOptions = body["stream_options"] switch
        {
            null => null,
            JsonObject o => o,
            var other => throw new BadRequest($"'stream_options' must be an object, found {Shown(other)}.", "stream_options"),
        };
        bool includeUsage = Read<bool>(streamOptions?["include_usage"], "stream_options", "a boolean", out var usageValue, "stream_options.include_usage") && usageValue;
        var ids = batcher.Encode(prompt);
        if (ids.Length == 0) throw new BadRequest("The prompt encodes to no tokens.", chat ? "messages" : "prompt");
        // A prompt that fills the context leaves 0 here, and the batcher refuses it as too long.
        maxTokens ??= Math.Max(0, Math.Min(options.MaxTokensLimit, batcher.Teacher.Config.MaxPositions - ids.Length));
        return new ParsedRequest(ids, new SamplingKey(temperature, topP, maxTokens.Value, string.Join('\0', stops), seed), n, topLogProbs, stream, includeUsage);
    }

    /// <summary>
    /// OpenAI parameters this server cannot honour, each with what leaves it without effect given the request's n: another
    /// value is refused, since ignoring it would answer as if it had not been sent (penalties, a logit bias, an echoed
    /// prompt, tools or a JSON format the client then relies on).
    /// </summary>
    private static readonly (string Name, Func<JsonNode, int, bool> Neutral)[] Unserved =
    [
        ("frequency_penalty", (v, _) => IsNumber(v, 0)), ("presence_penalty", (v, _) => IsNumber(v, 0)),
        ("best_of", (v, n) => IsNumber(v, 1) || IsNumber(v, n)),
        ("logit_bias", (v, _) => v is JsonObject { Count: 0 }), ("echo", (v, _) => v.GetValueKind() == JsonValueKind.False),
        ("suffix", (v, _) => v.GetValueKind() == JsonValueKind.String && v.GetValue<string>().Length == 0),
        ("tools", (v, _) => v is JsonArray { Count: 0 }), ("functions", (v, _) => v is JsonArray { Count: 0 }),
        ("tool_choice", (v, _) => v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() is "none" or "auto"),
        ("function_call", (v, _) => v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() is "none" or "auto"),
        ("response_format", (v, _) => v is JsonObject { Count: 1 } format && format["type"]?.GetValueKind() == JsonValueKind.String && format["type"]!.GetValue<string>() == "text"),
    ];

    private static bool IsNumber(JsonNode node, double value) => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var x) && x == value;

    private static string Content(JsonNode? content, int index) => content switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonArray parts => string.Concat(parts.Select(p => p is JsonObject part && Read<string>(part["type"], "messages", "a string", out var type, $"messages[{index}].content[].type") && type == "text"
            ? Read<string>(part["text"], "messages", "a string", out var text, $"messages[{index}].content[].text") ? text : ""
            : throw new BadRequest($"messages[{index}] has a '{p?["type"]}' part; only text is served.", "messages"))),
        null => "",
        _ => throw new BadRequest($"messages[{index}].content must be a string or an array of text parts.", "messages"),
    };

    /// <summary>
    /// Reads <paramref name="node"/> as a <typeparamref name="T"/>: false when it is absent or JSON null (the default
    /// applies, as OpenAI's null does); another JSON type is the client's error, named by <paramref name="param"/>
    /// (<paramref name="field"/> in the message, when it is a part of that parameter). Without it, a number sent as
    /// <c>[0.2]</c> fell back to the default unnoticed, and a string answered with .NET's conversion message and no param.
    /// </summary>
    private static bool Read<T>(JsonNode? node, string param, string expected, out T value, string? field = null)
    {
        value = default!;
        if (node is null) return false;
        if (node is JsonValue v && v.TryGetValue(out T? x) && x is not null) { value = x; return true; }
        throw new BadRequest($"'{field ?? param}' must be {expected}, found {Shown(node)}.", param);
    }

    /// <summary>What a client sent, for an error message: a number or boolean as written; a string, array or object by its kind (they can be long).</summary>
    private static string Shown(JsonNode node) => node.GetValueKind() switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => node.ToJsonString(),
    };

    private static double Number(JsonObject body, string name, double fallback, double min, double max)
    {
        if (!Read<double>(body[name], name, "a number", out var x)) return fallback;
        if (!(x >= min && x <= max)) throw new BadRequest(string.Create(CultureInfo.InvariantCulture, $"'{name}' must be in [{min}, {max}], found {x}."), name);
        return x;
    }

    /// <summary>A count: <see cref="Number"/>'s range, and a whole number (1.7 choices is a client error, not 1).</summary>
    private static int Integer(JsonObject body, string name, int fallback, int min, int max)
    {
        double x = Number(body, name, fallback, min, max);
        if (x != Math.Floor(x)) throw new BadRequest(string.Create(CultureInfo.InvariantCulture, $"'{name}' must be a whole number, found {x}."), name);
        return (int)x;
    }

    private static JsonObject ChatLogProbs(IEnumerable<TokenLogProb> tokens) => new()
    {
        ["content"] = new JsonArray(tokens.Select(t => (JsonNode)new JsonObject
        {
            ["token"] = t.Token, ["logprob"] = t.LogProb, ["bytes"] = Bytes(t.Token),
            ["top_logprobs"] = new JsonArray(t.Top.Select(a => (JsonNode)new JsonObject { ["token"] = a.Token, ["logprob"] = a.LogProb, ["bytes"] = Bytes(a.Token) }).ToArray()),
        }).ToArray()),
        ["refusal"] = null,
    };

    private static JsonObject CompletionLogProbs(IReadOnlyList<TokenLogProb> tokens)
    {
        var top = new JsonArray();
        foreach (var t in tokens)
        {
            var alternatives = new JsonObject();
            foreach (var (token, logProb) in t.Top) alternatives[token] = logProb; // later duplicates (same text) keep the higher value
            top.Add(alternatives);
        }
        int offset = 0;
        return new JsonObject
        {
            ["tokens"] = new JsonArray(tokens.Select(t => (JsonNode)t.Token).ToArray()),
            ["token_logprobs"] = new JsonArray(tokens.Select(t => (JsonNode)t.LogProb).ToArray()),
            ["top_logprobs"] = top,
            ["text_offset"] = new JsonArray(tokens.Select(t => { int at = offset; offset += t.Token.Length; return (JsonNode)at; }).ToArray()),
        };
    }

    private static JsonArray Bytes(string token) => new(Encoding.UTF8.GetBytes(token).Select(b => (JsonNode)(int)b).ToArray());

    private static List<string> SplitForStreaming(string text)
    {
        var pieces = new List<string>();
        int start = 0;
        for (int i = 1; i <= text.Length; i++)
            if (i == text.Length || text[i] == ' ') { pieces.Add(text[start..i]); start = i; }
        return pieces;
    }

    private static async Task Event(HttpContext http, JsonObject data)
    {
        await http.Response.WriteAsync("data: " + data.ToJsonString() + "\n\n", http.RequestAborted);
        await http.Response.Body.FlushAsync(http.RequestAborted);
    }

    private static async Task WriteJson(HttpContext http, JsonObject data)
    {
        http.Response.ContentType = "application/json";
        await http.Response.WriteAsync(data.ToJsonString(), http.RequestAborted);
    }

    private static async Task Error(HttpContext http, string message, string? param, int status = StatusCodes.Status400BadRequest, string? code = null,
        string type = "invalid_request_error")
    {
        http.Response.StatusCode = status;
        await WriteJson(http, new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code },
        });
    }
}
