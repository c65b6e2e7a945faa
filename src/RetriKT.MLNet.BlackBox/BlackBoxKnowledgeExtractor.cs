using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using Polly;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.BlackBox;

/// <summary>
/// RetriKT step 3 with a black-box teacher: any LLM endpoint reached through <see cref="IChatClient"/> generates
/// samples per label from a hard prompt (the label's few-shot demonstrations, drawn anew per request, at a jittered
/// temperature) and labels them (log-probabilities of the verbalizer tokens where the endpoint returns them, else its
/// answer mapped to a label). The same filters and balanced assembly as <see cref="KnowledgeExtractor"/> build the
/// same kind of <see cref="KnowledgeStore"/>, so the student trains on either without knowing which. Requests spread
/// over many endpoints with bounded concurrency each; transient failures are retried (Polly, Retry-After honoured);
/// an endpoint that keeps failing is taken out and its requests go to the others; every judged sample is appended to
/// a fingerprinted checkpoint. Soft prompts and PPO need the weights and stay white-box.
/// </summary>
public sealed class BlackBoxKnowledgeExtractor
{
    private readonly IHostEnvironment _env;
    private readonly BlackBoxExtractorOptions _options;

    internal BlackBoxKnowledgeExtractor(IHostEnvironment env, BlackBoxExtractorOptions options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        // A copy, as ML.NET's estimators keep theirs: a later edit of the caller's object would change Fit unchecked.
        var o = _options = (options ?? throw new ArgumentNullException(nameof(options))).Copy();
        if (o.Teachers is not { Count: > 0 }) throw new ArgumentException("BlackBoxExtractorOptions.Teachers needs at least one endpoint.", nameof(options));
        if (o.Teachers.Any(t => t?.Client is null || t.MaxConcurrency < 1)) throw new ArgumentException("Every TeacherEndpoint needs a Client and MaxConcurrency >= 1.", nameof(options));
        if (o.Template is null) throw new ArgumentException("BlackBoxExtractorOptions.Template is required (columns, verbalizer, classification format).", nameof(options));
        // The filters are the white-box extractor's, and so are their ranges, checked before a request is paid for: MaxWords
        // below MinWords (or a negative NearDuplicateThreshold) spent every attempt of every label and kept nothing.
        new KnowledgeExtractorOptions
        {
            SamplesPerLabel = o.SamplesPerLabel, MaxAttemptsFactor = o.MaxAttemptsFactor, FidelityThreshold = o.FidelityThreshold,
            MinWords = o.MinWords, MaxWords = o.MaxWords, NearDuplicateThreshold = o.NearDuplicateThreshold, ContextTexts = o.ContextTexts,
        }.ValidateSettings(o.Template);
        if (o.AnswerConfidence is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(options), $"AnswerConfidence must be in (0, 1], found {o.AnswerConfidence}.");
        if (o.TopLogProbs is < 0 or > 20) throw new ArgumentOutOfRangeException(nameof(options), $"TopLogProbs must be in [0, 20], found {o.TopLogProbs}.");
        if (o.DemonstrationsPerRequest < 1 || o.MaxConsecutiveFailures < 1 || o.MaxRetries < 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"DemonstrationsPerRequest ({o.DemonstrationsPerRequest}) and MaxConsecutiveFailures ({o.MaxConsecutiveFailures}) must be >= 1, MaxRetries ({o.MaxRetries}) >= 0.");
        // The request settings, before Fit opens the checkpoint: Polly refused a timeout or delay out of its range there in a
        // multi-line ValidationException (Timeout.InfiniteTimeSpan, which the docs suggest for the client's own timeout,
        // among them), and a NaN temperature failed in the JSON writer. Written so that NaN fails.
        static void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(paramName: null, message); }
        Check(o.RequestTimeout == Timeout.InfiniteTimeSpan || (o.RequestTimeout >= EndpointResilience.ShortestTimeout && o.RequestTimeout <= EndpointResilience.LongestWait),
            $"RequestTimeout must be between 10 ms and 1 day (or Timeout.InfiniteTimeSpan for no limit), found {o.RequestTimeout}.");
        Check(o.RetryDelay >= TimeSpan.Zero && o.RetryDelay <= EndpointResilience.LongestWait, $"RetryDelay must be between 0 and 1 day, found {o.RetryDelay}.");
        Check(o.MaxRetryDelay >= TimeSpan.Zero && o.MaxRetryDelay <= EndpointResilience.LongestWait, $"MaxRetryDelay must be between 0 and 1 day, found {o.MaxRetryDelay}.");
        Check(o.Temperature >= 0 && float.IsFinite(o.Temperature), $"Temperature must be a finite number >= 0, found {Text(o.Temperature)}.");
        Check(o.TemperatureJitter >= 0 && float.IsFinite(o.TemperatureJitter), $"TemperatureJitter must be a finite number >= 0, found {Text(o.TemperatureJitter)}.");
        Check(o.TopP is null or (> 0 and <= 1), $"TopP must be in (0, 1] (or null for the endpoint's default), found {(o.TopP is float topP ? Text(topP) : "null")}.");
        Check(o.MaxOutputTokens is null or >= 1, $"MaxOutputTokens must be >= 1 (or null for the template's MaxNewTokens), found {o.MaxOutputTokens}.");
        Check(o.ClassificationMaxTokens >= 1, $"ClassificationMaxTokens must be >= 1, found {o.ClassificationMaxTokens}.");
        if (!o.GenerationPrompt.Contains("{examples}", StringComparison.Ordinal))
            throw new ArgumentException($"GenerationPrompt must contain {{examples}}, found \"{o.GenerationPrompt}\".", nameof(options));
        if (!o.ClassificationPrompt.Contains("{classification}", StringComparison.Ordinal))
            throw new ArgumentException($"ClassificationPrompt must contain {{classification}}, found \"{o.ClassificationPrompt}\".", nameof(options));
    }

    private static string Text(float value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>Labels in store order.</summary>
    public IReadOnlyList<string> Labels => _options.Labels ?? _options.Template!.Verbalizer.Keys.ToList();

    /// <summary>Extracts the knowledge store from the few-shot data (blocking; see <see cref="FitAsync"/>).</summary>
    public BlackBoxExtraction Fit(IDataView input) => FitAsync(input).GetAwaiter().GetResult();

    /// <summary>Extracts the knowledge store from the few-shot data (Text[, Text2], Label).</summary>
    public async Task<BlackBoxExtraction> FitAsync(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var template = o.Template!;
        var labels = Labels;
        template.Validate(labels, input.Schema);
        var fewShot = SoftPromptPpoTrainer.ReadExamples(input, template, o.LabelColumnName, labels);
        var host = new ComponentHost(_env, nameof(BlackBoxKnowledgeExtractor), o.Seed, o.Progress, o.CancellationToken);
        var run = new BlackBoxRun(o, template, labels, fewShot, host, Fingerprint(template, labels, fewShot));
        var (store, report) = await run.RunAsync().ConfigureAwait(false);
        host.Info($"Black-box knowledge extraction: {report}");
        return new BlackBoxExtraction(store, report);
    }

    /// <summary>
    /// SHA-256 over everything that decides which samples are asked for and kept: task, labels, few-shot data,
    /// prompts, sampling, soft-label source and filters. Endpoints, concurrency, retries and the token budget are
    /// operational and left out (a resumed run may use other servers).
    /// </summary>
    private RunFingerprint Fingerprint(TaskTemplate template, IReadOnlyList<string> labels, List<PromptExample> fewShot)
    {
        var o = _options;
        var settings = new JsonObject
        {
            ["template"] = new JsonObject
            {
                ["name"] = template.Name, ["text"] = template.TextColumn, ["text2"] = template.Text2Column, ["target"] = template.Target.ToString(),
                ["separator"] = template.PairSeparator, ["classification"] = template.ClassificationFormat,
                ["verbalizer"] = new JsonArray(labels.Select(l => (JsonNode)$"{l}={template.Verbalizer[l]}").ToArray()),
                ["min_words"] = template.MinWords, ["max_new_tokens"] = template.MaxNewTokens,
            },
            ["few_shot"] = new JsonArray(fewShot.Select(e => (JsonNode)$"{e.Label}\u0001{e.Text}\u0001{e.Text2}").ToArray()),
            ["contexts"] = new JsonArray((o.ContextTexts ?? []).Select(c => (JsonNode)c).ToArray()),
            ["prompts"] = new JsonArray(o.GenerationPrompt, o.ClassificationPrompt, o.DemonstrationsPerRequest),
            ["sampling"] = new JsonArray(o.Temperature, o.TemperatureJitter, o.TopP, o.MaxOutputTokens, string.Join('\u0001', o.StopSequences), o.ModelId),
            ["soft_labels"] = new JsonArray(o.SoftLabels.ToString(), o.TopLogProbs, o.ClassificationMaxTokens, o.AnswerConfidence),
            ["filters"] = new JsonArray(o.SamplesPerLabel, o.MaxAttemptsFactor, o.MinWords, o.MaxWords, o.FidelityThreshold, o.RequireArgmax, o.NearDuplicateThreshold, o.IncludeFewShot),
            ["seed"] = o.Seed,
        };
        // Only when on: checkpoints written before the setting existed kept cut-off samples, as a run with it off does.
        if (o.DropUnfinished) settings["drop_unfinished"] = true;
        // The model usually lives in the client (GetChatClient("gpt-4o-mini")), not in ModelId: without it a resume against
        // another model would mix two teachers' samples in one store that looks valid. Other servers of the same model are fine.
        if (o.ModelId is null)
            settings["client_models"] = new JsonArray(o.Teachers.Select(t => t.ClientModel)
                .OfType<string>().Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).Select(m => (JsonNode)m).ToArray());
        // The header keeps each group as written, or as its own hash when long (the few-shot texts), to name what differs.
        var shown = new JsonObject(settings.Select(kv => KeyValuePair.Create(kv.Key, kv.Value?.ToJsonString() is { Length: > 200 } json
            ? (JsonNode?)("sha256:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16])
            : kv.Value?.DeepClone())));
        return new RunFingerprint(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(settings.ToJsonString()))), shown);
    }
}

/// <summary>Result of <see cref="BlackBoxKnowledgeExtractor"/>: the store and what it took.</summary>
public sealed class BlackBoxExtraction
{
    internal BlackBoxExtraction(KnowledgeStore store, BlackBoxExtractionReport report) { Store = store; Report = report; }

    /// <summary>The extracted store (texts and soft labels; the student adds embeddings).</summary>
    public KnowledgeStore Store { get; }
    /// <summary>Counts, requests, retries, tokens, where the soft labels came from, endpoints taken out.</summary>
    public BlackBoxExtractionReport Report { get; }

    /// <summary>The store as an IDataView: Text, Text2, Label, SoftLabel (vector), Fidelity, Source — the white-box extractor's schema.</summary>
    public IDataView ToDataView(MLContext mlContext) => Store.ToDataView(mlContext);
}

/// <summary>What a black-box extraction did.</summary>
/// <param name="Extraction">The same counts as the white-box report (generated, kept, dropped per reason, diversity, fidelity); ResumedBatches counts resumed samples here.</param>
/// <param name="Requests">Requests sent (generation + classification), retries excluded.</param>
/// <param name="Retries">Retries after transient failures (429, 5xx, timeouts, connection failures).</param>
/// <param name="TokensUsed">Tokens the endpoints reported (prompt + output), resumed samples included.</param>
/// <param name="FromLogProbs">Judged samples (kept or dropped) whose soft label came from log-probabilities of the verbalizer tokens.</param>
/// <param name="FromClassification">Judged samples (kept or dropped) whose soft label came from the mapped answer (classify-and-map).</param>
/// <param name="Unlabelled">Samples the teacher's answer gave no label for (dropped as LowFidelity).</param>
/// <param name="RequestsPerEndpoint">Successful requests per endpoint name.</param>
/// <param name="EndpointsTakenOut">Endpoints taken out after failing <see cref="BlackBoxExtractorOptions.MaxConsecutiveFailures"/> requests in a row.</param>
/// <param name="StoppedByTokenBudget">The run stopped early at <see cref="BlackBoxExtractorOptions.TokenBudget"/>.</param>
public sealed record BlackBoxExtractionReport(ExtractionReport Extraction, long Requests, long Retries, long TokensUsed, int FromLogProbs, int FromClassification,
    int Unlabelled, IReadOnlyDictionary<string, long> RequestsPerEndpoint, IReadOnlyList<string> EndpointsTakenOut, bool StoppedByTokenBudget)
{
    /// <summary>
    /// "logprobs", "classify-and-map", "mixed" or "none": where the soft labels of the judged samples came from, kept or
    /// dropped (the counts <see cref="FromLogProbs"/> and <see cref="FromClassification"/>); a run that kept nothing still
    /// says how its samples were labelled.
    /// </summary>
    public string SoftLabelSource => (FromLogProbs, FromClassification) switch
    {
        ( > 0, 0) => "logprobs", (0, > 0) => "classify-and-map", ( > 0, > 0) => "mixed", _ => "none",
    };

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Extraction}; soft labels from {SoftLabelSource} (logprobs {FromLogProbs}, classify-and-map {FromClassification}, unlabelled {Unlabelled}); " +
        $"requests {Requests} ({string.Join(", ", RequestsPerEndpoint.Select(kv => $"{kv.Key}: {kv.Value}"))}), retries {Retries}, tokens {TokensUsed}" +
        $"{(EndpointsTakenOut.Count > 0 ? "; taken out: " + string.Join(", ", EndpointsTakenOut) : "")}{(StoppedByTokenBudget ? "; stopped at the token budget" : "")}");
}
