using Microsoft.Extensions.AI;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.BlackBox;

/// <summary>One teacher endpoint: a server or deployment reached through <see cref="IChatClient"/>.</summary>
/// <param name="Client">The client (for example <c>OpenAIClient.GetChatClient(model).AsIChatClient()</c>, or an OllamaSharp client).</param>
/// <param name="Name">Name in logs and the report. Default: "teacher-N" by position.</param>
/// <param name="MaxConcurrency">Requests in flight on this endpoint at most. Default 4.</param>
public sealed record TeacherEndpoint(IChatClient Client, string? Name = null, int MaxConcurrency = 4)
{
    /// <summary>The model the client asks for by default (<c>GetChatClient("gpt-4o-mini")</c>), or null when it does not say.</summary>
    internal string? ClientModel => Client.GetService<ChatClientMetadata>()?.DefaultModelId;
}

/// <summary>Where soft labels come from.</summary>
public enum SoftLabelSource
{
    /// <summary>
    /// Log-probabilities of the verbalizer tokens when the endpoint returns them, else classify-and-map (per sample). An
    /// endpoint that refuses a request for them (HTTP 400 or 422, answered when asked again without them) is asked without
    /// them from then on, with one warning.
    /// </summary>
    Auto,
    /// <summary>Log-probabilities only: a sample whose classification has none mapping to a label is dropped as unlabelled.</summary>
    LogProbs,
    /// <summary>The teacher's answer text mapped to a label, with <see cref="BlackBoxExtractorOptions.AnswerConfidence"/>.</summary>
    ClassifyAndMap,
}

/// <summary>
/// Options of <see cref="BlackBoxKnowledgeExtractor"/>. The filters (MinWords .. NearDuplicateThreshold, IncludeFewShot)
/// mean and default exactly as in <see cref="Knowledge.Extraction.KnowledgeExtractorOptions"/>.
/// </summary>
public sealed class BlackBoxExtractorOptions
{
    /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
    internal static class Defaults
    {
        public const int SamplesPerLabel = Knowledge.Extraction.KnowledgeExtractorOptions.Defaults.SamplesPerLabel; // as the white-box extractor
    }

    /// <summary>Default <see cref="GenerationPrompt"/> (instruction-tuned chat models).</summary>
    public const string InstructGenerationPrompt =
        "Here are examples of texts labelled \"{label}\" (labels: {labels}):\n{examples}\n\nWrite one new, different text labelled \"{label}\". Reply with the text only, on one line.\n{context}";
    /// <summary>Default <see cref="ClassificationPrompt"/>: the instruction, then the template's classification prompt up to its label slot.</summary>
    public const string InstructClassificationPrompt =
        "Answer with one word, one of: {labels}.\n\n{classification}";

    /// <summary>The teacher endpoints; requests spread over them. Required (at least one).</summary>
    public IReadOnlyList<TeacherEndpoint> Teachers { get; set; } = [];
    /// <summary>The task: columns, verbalizer (label words), classification format, MinWords, MaxNewTokens. Required.</summary>
    public TaskTemplate? Template { get; set; }
    /// <summary>Label order of the store; null takes the template verbalizer's key order.</summary>
    public IReadOnlyList<string>? Labels { get; set; }
    /// <summary>Generated samples to keep per label (balanced store). Default 64.</summary>
    public int SamplesPerLabel { get; set; } = Defaults.SamplesPerLabel;
    /// <summary>
    /// Most generation requests per label, as a multiple of <see cref="SamplesPerLabel"/> (rounded up), counted as each is
    /// sent; a request that still fails after its retries is not counted, and another takes its place. Default 3.
    /// </summary>
    public double MaxAttemptsFactor { get; set; } = 3;
    /// <summary>
    /// The generation request. Placeholders: <c>{label}</c> (the label's verbalizer word), <c>{labels}</c> (all of them),
    /// <c>{examples}</c> (demonstrations of the label, one per line), <c>{context}</c> (for second-part templates: a first
    /// part and the template's separator; empty otherwise). For a base (non-chat) model use "{examples}\n{context}".
    /// Default <see cref="InstructGenerationPrompt"/>.
    /// </summary>
    public string GenerationPrompt { get; set; } = InstructGenerationPrompt;
    /// <summary>
    /// The classification request. Placeholders: <c>{classification}</c> (the template's ClassificationFormat up to
    /// <c>{label}</c>, filled with the sample), <c>{labels}</c>. For a base model use "{classification}". Default
    /// <see cref="InstructClassificationPrompt"/>.
    /// </summary>
    public string ClassificationPrompt { get; set; } = InstructClassificationPrompt;
    /// <summary>Few-shot demonstrations of the label per generation request, drawn anew for each request. Default 4.</summary>
    public int DemonstrationsPerRequest { get; set; } = 4;
    /// <summary>Sampling temperature of generation requests. Default 1.</summary>
    public float Temperature { get; set; } = 1f;
    /// <summary>Each request's temperature is drawn uniformly from Temperature ± this (for diversity; clamped at 0). Default 0.2.</summary>
    public float TemperatureJitter { get; set; } = 0.2f;
    /// <summary>Nucleus sampling of generation requests; null leaves the endpoint's default. Default null.</summary>
    public float? TopP { get; set; }
    /// <summary>Most tokens per generated sample; null takes the template's MaxNewTokens.</summary>
    public int? MaxOutputTokens { get; set; }
    /// <summary>Stop sequences of generation requests. Default one newline (one sample per line).</summary>
    public IReadOnlyList<string> StopSequences { get; set; } = ["\n"];
    /// <summary>Model id sent with each request; null leaves the client's default.</summary>
    public string? ModelId { get; set; }
    /// <summary>Where soft labels come from. Default <see cref="SoftLabelSource.Auto"/>.</summary>
    public SoftLabelSource SoftLabels { get; set; } = SoftLabelSource.Auto;
    /// <summary>Alternatives per position asked for with log-probabilities (OpenAI allows 0..20). Default 20.</summary>
    public int TopLogProbs { get; set; } = 20;
    /// <summary>Most tokens of a classification answer. Default 4.</summary>
    public int ClassificationMaxTokens { get; set; } = 4;
    /// <summary>Classify-and-map: the probability given to the answered label (the rest is spread evenly). Default 0.9.</summary>
    public double AnswerConfidence { get; set; } = 0.9;
    /// <summary>Shortest kept sample in words; null takes the template's MinWords.</summary>
    public int? MinWords { get; set; }
    /// <summary>Longest kept sample in words. Default 80.</summary>
    public int MaxWords { get; set; } = 80;
    /// <summary>Lowest teacher probability of the intended label. Default 0.5.</summary>
    public double FidelityThreshold { get; set; } = 0.5;
    /// <summary>Also require the intended label to be the teacher's most probable label. Default true.</summary>
    public bool RequireArgmax { get; set; } = true;
    /// <summary>Estimated word-trigram Jaccard similarity at or above which a sample is a near duplicate; 1 disables. Default 0.8.</summary>
    public double NearDuplicateThreshold { get; set; } = 0.8;
    /// <summary>
    /// Drop samples whose generation stopped at the token limit (finish reason <c>length</c>) or at the endpoint's content
    /// filter (<c>content_filter</c>) rather than at an end token or stop sequence: their text is cut off mid-sentence (<see cref="RetriKT.MLNet.Knowledge.Extraction.DropReason.Unfinished"/>; no classification
    /// request is spent on them). Default false.
    /// </summary>
    public bool DropUnfinished { get; set; }
    /// <summary>Add the few-shot examples with their gold labels (one-hot soft labels). Default true.</summary>
    public bool IncludeFewShot { get; set; } = true;
    /// <summary>
    /// Extra first parts for second-part templates; the few-shot texts are always used. One without a word (blank, or only
    /// characters the tokenizer drops) is refused when the extractor is made: each request drawn with it was paid for and
    /// dropped as Empty.
    /// </summary>
    public IReadOnlyList<string>? ContextTexts { get; set; }
    /// <summary>
    /// JSONL checkpoint: a header with the run's fingerprint, then one line per judged sample. A restart with the same
    /// settings continues from it; with different settings it refuses. Null: none.
    /// </summary>
    public string? CheckpointPath { get; set; }
    /// <summary>Stop cleanly (no new requests; in-flight ones finish) once this many tokens were used (prompt + output, as the endpoints report). Null: no budget.</summary>
    public long? TokenBudget { get; set; }
    /// <summary>Retries of one request on 429, 408, 5xx, timeouts and connection failures. Default 4.</summary>
    public int MaxRetries { get; set; } = 4;
    /// <summary>First retry delay (exponential backoff with jitter from there) when the server sends no Retry-After. Default 0.5 s.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(0.5);
    /// <summary>Longest wait before a retry, Retry-After included (0 to 1 day). Default 60 s.</summary>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(60);
    /// <summary>Time limit of one attempt (10 ms to 1 day; <see cref="Timeout.InfiniteTimeSpan"/>: none). Default 120 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(120);
    /// <summary>Requests failing in a row (after their retries) that take an endpoint out of the run. Default 3.</summary>
    public int MaxConsecutiveFailures { get; set; } = 3;
    /// <summary>Label column of the few-shot data. Default "Label".</summary>
    public string LabelColumnName { get; set; } = "Label";
    /// <summary>Seed of the demonstration and temperature draws; null takes the MLContext seed (then 1).</summary>
    public int? Seed { get; set; }
    /// <summary>Progress: stage "BlackBoxExtraction", step = samples kept, metrics kept:&lt;label&gt;, requests:&lt;endpoint&gt;, requests, retries, tokens, generated.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }
    /// <summary>Cancellation (in-flight requests are cancelled; accepted samples are already in the checkpoint).</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>
    /// A copy of every setting, its lists copied too (a caller's list may change); the endpoints, the template and the
    /// clients are shared.
    /// </summary>
    internal BlackBoxExtractorOptions Copy()
    {
        var copy = (BlackBoxExtractorOptions)MemberwiseClone();
        copy.Teachers = Teachers?.ToArray()!;
        copy.Labels = Labels?.ToArray();
        copy.StopSequences = StopSequences?.ToArray()!;
        copy.ContextTexts = ContextTexts?.ToArray();
        return copy;
    }
}
