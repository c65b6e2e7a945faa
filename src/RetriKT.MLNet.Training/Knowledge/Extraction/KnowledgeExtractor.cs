using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>Options of <see cref="KnowledgeExtractor"/>.</summary>
public sealed class KnowledgeExtractorOptions
{
    /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
    internal static class Defaults
    {
        public const int SamplesPerLabel = 64;
        public const string LabelColumnName = "Label";
    }

    /// <summary>The tuned soft prompts (from <see cref="SoftPromptPpoTrainer"/>). Required unless <see cref="SoftPromptOptions"/> is set.</summary>
    public SoftPromptTransformer? SoftPrompts;
    /// <summary>When <see cref="SoftPrompts"/> is null: options to fit a SoftPromptPpoTrainer on the same few-shot data first.</summary>
    public SoftPromptPpoOptions? SoftPromptOptions;
    /// <summary>Generated samples to keep per label (balanced store). Default 64.</summary>
    public int SamplesPerLabel = Defaults.SamplesPerLabel;
    /// <summary>
    /// Most samples generated per label, as a multiple of <see cref="SamplesPerLabel"/>, in whole batches: at most
    /// ⌈SamplesPerLabel × MaxAttemptsFactor / <see cref="BatchSize"/>⌉ batches per label, so up to BatchSize − 1 samples
    /// more. Default 3.
    /// </summary>
    public double MaxAttemptsFactor = 3;
    /// <summary>Samples per generation batch. Default 16.</summary>
    public int BatchSize = 16;
    /// <summary>Shortest kept sample in words; null takes the template's MinWords.</summary>
    public int? MinWords;
    /// <summary>Longest kept sample in words. Default 80.</summary>
    public int MaxWords = 80;
    /// <summary>Lowest teacher probability of the intended label. Default 0.5.</summary>
    public double FidelityThreshold = 0.5;
    /// <summary>Also require the intended label to be the teacher's most probable label. Default true.</summary>
    public bool RequireArgmax = true;
    /// <summary>
    /// File each generated sample under the teacher's most probable label instead of the label its prompt was tuned
    /// for (the fidelity checks then apply to that label, and it counts towards that label's quota). When the soft
    /// prompts steer weakly, half of the samples fail the intended-label check and are thrown away; filed under the
    /// teacher's label they are as good as the rest, and extraction needs about half the generation. The store stays
    /// balanced per label. Default false (RetriKT's intended-label fidelity).
    /// </summary>
    public bool AssignToTeacherLabel;
    /// <summary>Estimated word-trigram Jaccard similarity at or above which a sample is a near duplicate; 1 disables. Default 0.8.</summary>
    public double NearDuplicateThreshold = 0.8;
    /// <summary>
    /// Drop samples whose generation stopped at the token limit (<see cref="TaskTemplate.MaxNewTokens"/>) rather than at an
    /// end token or stop sequence (<see cref="DropReason.Unfinished"/>): their text is cut off mid-sentence. On SST-2 up to
    /// 11 % of a store's samples are such texts, and dropping them changed neither store student (76.5 against 76.4 %
    /// over five seeds) while generation grew by 10 % (docs/RESULTS.md, "Thirty-fifth session"). Default false.
    /// </summary>
    public bool DropUnfinished;
    /// <summary>
    /// Drop generated samples the plain teacher finds less fluent than every few-shot example (mean per-token NLL above
    /// the few-shot maximum plus <see cref="FluencyMargin"/>): garbled text. Default true.
    /// </summary>
    public bool FluencyFilter = true;
    /// <summary>Nats per token added to the few-shot maximum before a sample counts as disfluent. Default 0.</summary>
    public double FluencyMargin;
    /// <summary>Add the few-shot examples with their gold labels (one-hot soft labels). Default true.</summary>
    public bool IncludeFewShot = true;
    /// <summary>
    /// In-domain text without labels, as rows with the template's text columns (Text, and Text2 for pairs): after the
    /// generated samples, each row not already in the store is soft-labelled by the teacher and joins the store under its
    /// most probable label (<see cref="KnowledgeSource.Unlabeled"/>; <see cref="UnlabeledText"/>). One teacher forward
    /// pass per row, no generation; these rows are not balanced per label and pass no filter. With
    /// <see cref="SamplesPerLabel"/> = 0 the store is these rows and the few-shot examples: distillation on unlabelled
    /// text. On SST-2, 32,768 sentences of critics' reviews taught the tiny student more than 4,096 generated samples per
    /// label (77.6 against 76.4 % over five seeds; docs/RESULTS.md, "Twenty-seventh session"). It must not hold the rows
    /// you evaluate on. Null: none.
    /// </summary>
    public IDataView? UnlabeledData;
    /// <summary>
    /// Extra first-part texts for second-part tasks (for example the task's unlabeled texts); the few-shot texts are always
    /// used. One without a word (blank, or only characters the tokenizer drops) is refused when the extractor is built.
    /// </summary>
    public IReadOnlyList<string>? ContextTexts;
    /// <summary>
    /// A JSONL checkpoint of generated batches: an interrupted extraction resumes from it and keeps what it generated.
    /// Its first line is a fingerprint of everything that shapes the batches (teacher, soft prompts, template, labels,
    /// contexts, batch size, calibration, seed); a checkpoint of another run stops the extraction with an error naming
    /// what differs, unless <see cref="StartFreshOnCheckpointMismatch"/> is set. A run holds <c>{CheckpointPath}.lock</c>
    /// until it ends: a second run on the same path is refused while the first runs. Null: none.
    /// </summary>
    public string? CheckpointPath;
    /// <summary>
    /// When the checkpoint at <see cref="CheckpointPath"/> belongs to another run: false (default) stops with an
    /// <see cref="InvalidDataException"/>; true moves it aside to <c>&lt;path&gt;.mismatched</c> (with a warning) and starts fresh;
    /// when that name is taken (an earlier run's checkpoint moved aside), to <c>&lt;path&gt;.mismatched.2</c>, <c>.3</c>, …
    /// </summary>
    public bool StartFreshOnCheckpointMismatch;
    /// <summary>Calibrate the teacher's verbalizer (contextual calibration) for soft labels. Default true.</summary>
    public bool CalibrateVerbalizer = true;
    /// <summary>Label column of the few-shot data. Default "Label".</summary>
    public string LabelColumnName = Defaults.LabelColumnName;
    /// <summary>Seed; null takes the MLContext seed (then 1).</summary>
    public int? Seed;
    /// <summary>Progress callback.</summary>
    public IProgress<TrainingProgress>? Progress;
    /// <summary>Cancellation between batches.</summary>
    public CancellationToken CancellationToken;

    /// <summary>
    /// A copy of every setting, <see cref="SoftPromptOptions"/> and <see cref="ContextTexts"/> copied too; the soft
    /// prompts and the unlabelled data are shared (a fitted transformer and a data view do not change).
    /// </summary>
    internal KnowledgeExtractorOptions Copy()
    {
        var copy = (KnowledgeExtractorOptions)MemberwiseClone();
        copy.SoftPromptOptions = SoftPromptOptions?.Copy();
        copy.ContextTexts = ContextTexts?.ToArray();
        return copy;
    }

    /// <summary>
    /// The settings' own ranges, written so that NaN fails, with the option's name: what the extractor's constructor
    /// checks, and what <c>RetriKTPipelineOptions.Validate</c> checks before there are soft prompts. Given the
    /// <paramref name="template"/> (known once the prompts are), <see cref="MaxWords"/> is also checked against its MinWords
    /// when <see cref="MinWords"/> is null.
    /// </summary>
    internal void ValidateSettings(TaskTemplate? template = null)
    {
        // No parameter name: the message names the option, and hosts print it as it is.
        static void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(paramName: null, message); }
        Check(SamplesPerLabel >= 0, $"SamplesPerLabel must be >= 0, found {SamplesPerLabel}.");
        Check(BatchSize > 0, $"BatchSize must be positive, found {BatchSize}.");
        Check(MaxAttemptsFactor >= 1 && double.IsFinite(MaxAttemptsFactor), $"MaxAttemptsFactor must be a finite number >= 1, found {Text(MaxAttemptsFactor)}.");
        Check(FidelityThreshold is >= 0 and <= 1, $"FidelityThreshold must be in [0, 1], found {Text(FidelityThreshold)}.");
        Check(MinWords is null or >= 1, $"MinWords must be >= 1 (or null for the template's), found {MinWords}.");
        Check(MaxWords >= (MinWords ?? 1), MinWords is int min
            ? $"MaxWords ({MaxWords}) must be >= MinWords ({min}): no sample could pass both."
            : $"MaxWords must be >= 1, found {MaxWords}.");
        if (MinWords is null && template is not null)
            Check(MaxWords >= template.MinWords, $"MaxWords ({MaxWords}) must be >= the MinWords of template '{template.Name}' ({template.MinWords}): no sample could pass both.");
        Check(NearDuplicateThreshold is >= 0 and <= 1, $"NearDuplicateThreshold must be in [0, 1] (1 turns the filter off), found {Text(NearDuplicateThreshold)}.");
        Check(double.IsFinite(FluencyMargin), $"FluencyMargin must be a finite number of nats per token, found {Text(FluencyMargin)}.");
        // A context without a word gives every sample drawn with it an empty first part, which the Empty filter drops: its
        // generation (a paid request, for the black-box extractor) showed only in the drop counts.
        for (int i = 0; i < (ContextTexts?.Count ?? 0); i++)
            Check(TextTokenizingTransformer.HasWordCharacter(ContextTexts![i]),
                $"ContextTexts[{i}] {TaskTemplate.Emptiness(ContextTexts[i])}; expected a first part for the teacher to write a second part after.");
    }

    private static string Text(double value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Most samples generated per label (both extractors): <paramref name="samplesPerLabel"/> × <paramref name="maxAttemptsFactor"/>,
    /// rounded up. The product is rounded to 6 decimals first: in floating point 100 × 1.1 is 110.00000000000001, which
    /// rounded up alone gave 111 (and the white-box extractor a whole batch more).
    /// </summary>
    internal static int MostAttempts(int samplesPerLabel, double maxAttemptsFactor) => (int)Math.Ceiling(Math.Round(samplesPerLabel * maxAttemptsFactor, 6));
}

/// <summary>Counts of an extraction run.</summary>
/// <param name="Generated">Samples generated per label.</param>
/// <param name="Kept">Generated samples kept per label.</param>
/// <param name="Dropped">Dropped samples per reason.</param>
/// <param name="FewShot">Few-shot examples added.</param>
/// <param name="DistinctUnigrams">distinct-1 over kept generated texts.</param>
/// <param name="DistinctBigrams">distinct-2 over kept generated texts.</param>
/// <param name="MeanFidelity">Mean teacher probability of the label each kept generated sample is filed under (the intended one, or the teacher's with <see cref="KnowledgeExtractorOptions.AssignToTeacherLabel"/>); 0 when none was kept, which the report's line leaves out.</param>
/// <param name="ResumedBatches">Batches taken from the checkpoint instead of generated.</param>
public sealed record ExtractionReport(IReadOnlyDictionary<string, int> Generated, IReadOnlyDictionary<string, int> Kept,
    IReadOnlyDictionary<DropReason, int> Dropped, int FewShot, double DistinctUnigrams, double DistinctBigrams, double MeanFidelity, int ResumedBatches)
{
    /// <inheritdoc/>
    /// <remarks>
    /// The measures of the generated samples are left out where there are none to measure: with nothing generated
    /// (SamplesPerLabel 0, distillation on unlabelled text) the line read "mean fidelity 0.000, generated with the intended
    /// teacher label 0.0 %", a teacher that ignores the labels, and with nothing kept "distinct-1 1.000".
    /// </remarks>
    public override string ToString() => Generated.Values.Sum() == 0
        ? string.Create(CultureInfo.InvariantCulture, $"generated 0; few-shot {FewShot}{UnlabeledNote()}{TimesText()}")
        : string.Create(CultureInfo.InvariantCulture,
            $"generated {Generated.Values.Sum()}, kept {Kept.Values.Sum()} ({string.Join(", ", Kept.Select(kv => $"{kv.Key}: {kv.Value}"))}), " +
            $"dropped {DroppedText()}; few-shot {FewShot}{KeptText()}{IntendedShareText()}{UnlabeledNote()}{TimesText()}");

    private string DroppedText() => Dropped.Values.Sum() == 0 ? "none" : string.Join(", ", Dropped.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key}: {kv.Value}"));

    private string KeptText() => Kept.Values.Sum() == 0 ? ""
        : string.Create(CultureInfo.InvariantCulture, $"; distinct-1 {DistinctUnigrams:F3}, distinct-2 {DistinctBigrams:F3}, mean fidelity {MeanFidelity:F3}");

    private string TimesText() => Times is { } t
        ? string.Create(CultureInfo.InvariantCulture, $"; time in generation {t.Generation.TotalSeconds:F0} s, soft labels {t.SoftLabels.TotalSeconds:F0} s, fluency {t.Fluency.TotalSeconds:F0} s")
        : "";

    /// <summary>
    /// Where this run's extraction time went. Batches taken from a checkpoint cost no generation or soft-label time, and
    /// no fluency time once their NLLs are in the checkpoint (a checkpoint written before it stored them gets them on its
    /// first resumed run). The fluency threshold is applied after the checkpoint, so a changed margin still applies to a
    /// resumed run. Null when the extraction path does not measure it.
    /// </summary>
    public ExtractionTimes? Times { get; init; }

    /// <summary>Rows of <see cref="KnowledgeExtractorOptions.UnlabeledData"/> that joined the store, labelled by the teacher; 0 when none.</summary>
    public int Unlabeled { get; init; }

    private string UnlabeledNote() => Unlabeled == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $"; unlabelled rows labelled by the teacher {Unlabeled}");

    private string IntendedShareText() => IntendedLabelShare is double share
        ? string.Create(CultureInfo.InvariantCulture, $", generated with the intended teacher label {share:P1}") : "";

    /// <summary>
    /// Share of the generated (non-empty) samples whose teacher label — the argmax of the soft label — is the label
    /// they were generated for, before any filter: how faithful the soft prompts are. (Among kept samples the share is
    /// 1 by construction when the argmax filter is on.) Samples the teacher gave no soft label (a black-box endpoint
    /// that answered nothing usable) are not counted. Null when no sample was counted (nothing generated, or no generated
    /// sample had text and a soft label), so "not measured" is not read as 0 %, a teacher that ignores every label; the
    /// report's line then leaves the share out. Both extraction paths fill it.
    /// </summary>
    public double? IntendedLabelShare { get; init; }

    /// <summary>The report of a finished extraction from its per-label counts and kept entries (any extraction path).</summary>
    internal static ExtractionReport Create(TaskTemplate template, IReadOnlyList<string> labels, int[] generated, List<KnowledgeEntry>[] kept,
        Dictionary<DropReason, int> dropped, int fewShot, int resumed, IntendedLabelTally intended)
    {
        var keptGenerated = kept.SelectMany(k => k).ToList();
        var keptTexts = keptGenerated.Select(e => template.RenderTarget(e.Text!, e.Text2)).ToList();
        return new ExtractionReport(
            labels.Select((l, i) => (l, generated[i])).ToDictionary(x => x.l, x => x.Item2),
            labels.Select((l, i) => (l, kept[i].Count)).ToDictionary(x => x.l, x => x.Item2),
            dropped, fewShot,
            TextStatistics.DistinctN(keptTexts, 1), TextStatistics.DistinctN(keptTexts, 2),
            keptGenerated.Count == 0 ? 0 : keptGenerated.Average(e => e.Fidelity), resumed) { IntendedLabelShare = intended.Share };
    }

    /// <summary>The store's entries: the few-shot examples with gold labels (when included), then the kept samples
    /// interleaved across labels so that any prefix of the store stays balanced.</summary>
    internal static List<KnowledgeEntry> BalancedEntries(List<PromptExample> fewShot, bool includeFewShot, int labelCount, List<KnowledgeEntry>[] kept)
    {
        var entries = new List<KnowledgeEntry>();
        if (includeFewShot)
            entries.AddRange(fewShot.Select(e => KnowledgeEntry.Gold(e.Text, e.Text2, e.Label, labelCount)));
        for (int i = 0; i < kept.Max(k => k.Count); i++)
            for (int l = 0; l < labelCount; l++)
                if (i < kept[l].Count) entries.Add(kept[l][i]);
        return entries;
    }
}

/// <summary>
/// RetriKT step 3: the tuned teacher generates samples for each label; each gets the teacher's soft label (the
/// verbalizer's probabilities over the labels); filters drop empty, too short/long, low-fidelity and duplicate
/// samples and keep the labels balanced; the few-shot examples join with their gold labels. Generation is batched,
/// seeded (same seed, same store) and resumable through a JSONL checkpoint.
/// </summary>
public sealed class KnowledgeExtractor : IEstimator<KnowledgeExtractorTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly KnowledgeExtractorOptions _options;

    internal KnowledgeExtractor(IHostEnvironment env, KnowledgeExtractorOptions options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        // A copy, as ML.NET's estimators keep theirs: a later edit of the caller's object would change Fit unchecked.
        _options = options = (options ?? throw new ArgumentNullException(nameof(options))).Copy();
        if (options.SoftPrompts is null && options.SoftPromptOptions is null)
            throw new ArgumentException("KnowledgeExtractorOptions needs SoftPrompts (a fitted SoftPromptPpoTrainer) or SoftPromptOptions to fit one.");
        // The prompts to fit are checked now too, not after the few-shot data is read.
        if (options.SoftPrompts is null) options.SoftPromptOptions!.Validate();
        options.ValidateSettings(Template);
    }

    /// <summary>The template of the soft prompts (given, or to be fitted).</summary>
    private TaskTemplate Template => _options.SoftPrompts?.Template ?? _options.SoftPromptOptions!.Template!;

    /// <summary>
    /// The input plus SoftLabel (a vector of Single with the labels as SlotNames, as Transform gives it). Refuses an input
    /// without the columns <see cref="Fit"/> reads (<see cref="CheckInput"/>).
    /// </summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckInput(inputSchema);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[KnowledgeExtractorTransformer.SoftLabelColumn] = SchemaShapes.Vector(KnowledgeExtractorTransformer.SoftLabelColumn, NumberDataViewType.Single,
            annotations: SchemaShapes.Annotations(SchemaShapes.Vector(AnnotationNames.SlotNames, TextDataViewType.Instance)));
        return new SchemaShape(columns.Values);
    }

    /// <summary>
    /// The columns <see cref="Fit"/> reads, checked before any prompt tuning or generation: the template's text columns
    /// (String) and the label column (String, or a key with text key values). One line naming the column, what the
    /// template or the option needs and what the data has (no parameter name: hosts print it as it is).
    /// </summary>
    private void CheckInput(SchemaShape input)
    {
        Template.CheckTextColumns(input);
        string labelName = _options.LabelColumnName;
        var label = input.FirstOrDefault(c => c.Name == labelName);
        if (label.Name is null)
            throw new ArgumentOutOfRangeException(paramName: null, $"Label column '{labelName}' not found. Columns: {string.Join(", ", input.Select(c => $"'{c.Name}'"))}.");
        SoftPromptPpoTrainer.CheckLabelType(label); // the prompt trainer's rule, which reads the same column
    }

    /// <summary>Extracts the knowledge store from the few-shot data.</summary>
    public KnowledgeExtractorTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        CheckInput(SchemaShapes.Of(input.Schema));
        var o = _options;
        // Prompts fitted here report to this extractor's Progress and stop on its token (before, prompt tuning, the longest
        // stage, reported nothing there and ran to its end after a cancel), and are released if extraction then fails or
        // is cancelled (before, their teacher stayed loaded).
        bool ownsPrompts = o.SoftPrompts is null;
        var prompts = o.SoftPrompts ?? new SoftPromptPpoTrainer(_env, o.SoftPromptOptions!.WithRunControlOf(o.Progress, o.CancellationToken)).Fit(input);
        try
        {
            var template = prompts.Template;
            var labels = prompts.Labels;
            template.Validate(labels); // the input's columns are checked above
            var fewShot = SoftPromptPpoTrainer.ReadExamples(input, template, o.LabelColumnName, labels);
            var host = new ComponentHost(_env, nameof(KnowledgeExtractor), o.Seed, o.Progress, o.CancellationToken);
            var (store, report) = Extract(prompts, fewShot, host);
            if (o.UnlabeledData is { } unlabeled)
            {
                int before = store.Count;
                store = UnlabeledText.Add(store, ReadUnlabeled(unlabeled, template), new VerbalizerClassifier(prompts.Teacher, template, labels, o.CalibrateVerbalizer),
                    host.Info, (done, total) => host.Report("Unlabelled text", done, total), o.CancellationToken);
                report = report with { Unlabeled = store.Count - before };
            }
            host.Info($"Knowledge extraction: {report}");
            return new KnowledgeExtractorTransformer(_env, prompts, store, report, o.CalibrateVerbalizer, ownsSoftPrompts: ownsPrompts);
        }
        catch
        {
            if (ownsPrompts) prompts.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The template's text columns of <see cref="KnowledgeExtractorOptions.UnlabeledData"/>, row by row. A row without
    /// a text (<see cref="TaskTemplate.MissingText"/>: a pair template's row without its second text too) fails naming
    /// the row and column: it was labelled by the teacher and stored, and the pair student refused the store afterwards,
    /// naming a store entry instead of the row.
    /// </summary>
    internal static List<(string Text, string? Text2)> ReadUnlabeled(IDataView data, TaskTemplate template)
    {
        template.CheckTextColumns(SchemaShapes.Of(data.Schema), data: "UnlabeledData");
        var text = data.Schema[template.TextColumn];
        var text2 = template.Text2Column is { } name2 ? data.Schema[name2] : (DataViewSchema.Column?)null;
        var rows = new List<(string, string?)>();
        using var cursor = data.GetRowCursor(text2 is { } t2 ? [text, t2] : [text]);
        var getText = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        var getText2 = text2 is { } c2 ? cursor.GetGetter<ReadOnlyMemory<char>>(c2) : null;
        ReadOnlyMemory<char> a = default, b = default;
        while (cursor.MoveNext())
        {
            getText(ref a);
            getText2?.Invoke(ref b);
            var (first, second) = (a.ToString(), getText2 is null ? null : b.ToString());
            if (template.MissingText(first, second) is { } missing) throw new ArgumentException($"UnlabeledData row {rows.Count}: {missing}");
            rows.Add((first, second));
        }
        return rows;
    }

    private (KnowledgeStore Store, ExtractionReport Report) Extract(SoftPromptTransformer prompts, List<PromptExample> fewShot, ComponentHost host)
    {
        var o = _options;
        var template = prompts.Template;
        var labels = prompts.Labels;
        var scorer = new VerbalizerClassifier(prompts.Teacher, template, labels, o.CalibrateVerbalizer);
        int minWords = o.MinWords ?? template.MinWords;
        int maxBatches = (int)(((long)KnowledgeExtractorOptions.MostAttempts(o.SamplesPerLabel, o.MaxAttemptsFactor) + o.BatchSize - 1) / o.BatchSize);
        var firstParts = fewShot.Select(e => e.Text).ToList();
        prompts.CheckContextsFit([.. firstParts, .. o.ContextTexts ?? []], i => i < firstParts.Count ? $"Row {i}" : $"ContextTexts[{i - firstParts.Count}]");
        var contexts = firstParts.Concat(o.ContextTexts ?? []).Distinct().ToList();
        using var checkpoint = new ExtractionCheckpoint(o.CheckpointPath, labels.Count, Fingerprint(prompts, contexts, host.Seed), o.StartFreshOnCheckpointMismatch, host);
        int resumed = 0;

        var fluency = o.FluencyFilter ? new FluencyFilter(prompts.Teacher, template, fewShot.Select(e => (e.Text, e.Text2)), o.FluencyMargin) : null;
        if (fluency is not null) host.Info($"Fluency filter: samples above {fluency.Threshold:F2} nats per token (the least fluent few-shot example + {o.FluencyMargin}) are dropped.");
        var judge = new SampleJudge(template, minWords, o.MaxWords, o.FidelityThreshold, o.RequireArgmax, o.NearDuplicateThreshold, o.DropUnfinished);
        foreach (var e in fewShot) judge.Duplicates.Admit(template.RenderTarget(e.Text, e.Text2));
        var kept = new List<KnowledgeEntry>[labels.Count];
        var generated = new int[labels.Count];
        var intended = new IntendedLabelTally(labels);
        var dropped = Enum.GetValues<DropReason>().ToDictionary(r => r, _ => 0);
        for (int l = 0; l < labels.Count; l++) kept[l] = [];

        int totalBatches = maxBatches * labels.Count, done = 0;
        TimeSpan generation = default, softLabels = default, fluencyTime = default;
        void ReportProgress(int total) => host.Report("Extraction", done, total, new Dictionary<string, double>
        {
            ["kept"] = kept.Sum(k => k.Count), ["generated"] = generated.Sum(),
        });
        for (int batch = 0; batch < maxBatches; batch++)
        {
            for (int label = 0; label < labels.Count; label++)
            {
                if (kept[label].Count >= o.SamplesPerLabel) continue;
                host.CheckAlive();
                var samples = checkpoint.TryGet(label, batch);
                if (samples is not null) resumed++;
                else
                {
                    long seed = SeedMixer.Derive(host.Seed, "extraction-batch", label, batch);
                    var pick = SeedMixer.Random(seed, "extraction-contexts");
                    var batchContexts = Enumerable.Range(0, o.BatchSize).Select(_ => contexts[pick.Next(contexts.Count)]).ToList();
                    long started = Stopwatch.GetTimestamp();
                    var raw = prompts.Generate(label, o.BatchSize, seed, batchContexts, o.BatchSize, o.CancellationToken);
                    long generatedAt = Stopwatch.GetTimestamp();
                    var probabilities = scorer.Probabilities(raw.Select(s => (s.Text, s.Text2)).ToList());
                    generation += Stopwatch.GetElapsedTime(started, generatedAt);
                    softLabels += Stopwatch.GetElapsedTime(generatedAt);
                    // A NaN passes the fidelity filter (every comparison with it is false) and failed only in the store's
                    // constructor, by an entry index; named here, before the checkpoint keeps it.
                    for (int i = 0; i < probabilities.Length; i++)
                        if (KnowledgeStore.SoftLabelError(probabilities[i], labels.Count) is { } error)
                            throw new InvalidOperationException($"The teacher gave sample {i} of batch {batch} for label '{labels[label]}' the soft label [{KnowledgeStore.SoftLabelText(probabilities[i])}]: {error}");
                    samples = raw.Select((s, i) => new ScoredSample(s, probabilities[i])).ToList();
                    checkpoint.Append(label, batch, samples);
                }
                var nll = fluency is null ? null : checkpoint.TryGetFluency(label, batch, samples.Count);
                if (fluency is not null && nll is null)
                {
                    long fluencyStarted = Stopwatch.GetTimestamp();
                    nll = fluency.MeanTokenNll(samples.Select(x => (x.Sample.Text, x.Sample.Text2)).ToList());
                    fluencyTime += Stopwatch.GetElapsedTime(fluencyStarted);
                    checkpoint.AppendFluency(label, batch, nll);
                }
                for (int i = 0; i < samples.Count; i++)
                {
                    var s = samples[i];
                    int teacherLabel = RetrievalMix.ArgMax(s.Probabilities);
                    generated[label]++;
                    if (SampleJudge.HasText(template, s.Sample.Text, s.Sample.Text2)) intended.Add(label, teacherLabel);
                    int target = o.AssignToTeacherLabel ? teacherLabel : label;
                    var reason = judge.Judge(s.Sample.Text, s.Sample.Text2, s.Probabilities, target, s.Sample.Finished,
                        disfluent: nll is not null && nll[i] > fluency!.Threshold, labelFull: kept[target].Count >= o.SamplesPerLabel);
                    if (reason is { } r) { dropped[r]++; continue; }
                    kept[target].Add(new KnowledgeEntry(s.Sample.Text, s.Sample.Text2, target, s.Probabilities, s.Probabilities[target], KnowledgeSource.Generated));
                }
                done++;
                ReportProgress(totalBatches);
            }
            if (kept.All(k => k.Count >= o.SamplesPerLabel)) break;
        }
        // The total is the most batches the quotas may need; quotas met sooner end the stage at the batches it took, so its
        // last report says it is done (before, it stayed at e.g. 2 of 8, and the stage's end was never logged).
        if (done < totalBatches) ReportProgress(done);
        for (int l = 0; l < labels.Count; l++)
            if (kept[l].Count < o.SamplesPerLabel)
                host.Warning($"Label '{labels[l]}': kept {kept[l].Count} of {o.SamplesPerLabel} wanted samples after {generated[l]} generated (raise MaxAttemptsFactor or relax the filters).");

        intended.WarnWhereTheTeacherIgnoresTheLabel(host);

        var entries = ExtractionReport.BalancedEntries(fewShot, o.IncludeFewShot, labels.Count, kept);
        var report = ExtractionReport.Create(template, labels, generated, kept, dropped, o.IncludeFewShot ? fewShot.Count : 0, resumed, intended) with
        {
            Times = new ExtractionTimes(generation, softLabels, fluencyTime),
        };
        return (new KnowledgeStore(labels, entries), report);
    }

    /// <summary>
    /// What shapes the checkpointed batches (raw generated samples and their soft labels). The filters and the quotas
    /// are not part of it: they apply after the checkpoint, so a resumed run may change them.
    /// </summary>
    private JsonObject Fingerprint(SoftPromptTransformer prompts, IReadOnlyList<string> contexts, int seed) => new()
    {
        ["teacher"] = prompts.TeacherHash,
        ["soft_prompts"] = prompts.ContentHash(),
        ["template"] = prompts.Template.Name,
        ["generation_stops"] = string.Join(" | ", prompts.Template.GenerationStops),
        ["labels"] = string.Join(", ", prompts.Labels),
        ["contexts"] = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("\u0000", contexts)))),
        ["batch_size"] = _options.BatchSize,
        ["calibrate_verbalizer"] = _options.CalibrateVerbalizer,
        ["seed"] = seed,
        // 2: per-batch seeds from SeedMixer.Derive (1, unnamed: the seed * 7919 + label * 104,729 + batch formula); a
        // checkpoint written with other seeds holds other samples, so it must not be resumed.
        ["seed_derivation"] = 2,
    };
}

/// <summary>Wall time of an extraction's three teacher passes.</summary>
/// <param name="Generation">Sampling the texts (soft prompt, then decoding).</param>
/// <param name="SoftLabels">The teacher's label probabilities of each text (the verbalizer pass).</param>
/// <param name="Fluency">The teacher's per-token NLL of each text (the fluency filter; zero when it is off).</param>
public sealed record ExtractionTimes(TimeSpan Generation, TimeSpan SoftLabels, TimeSpan Fluency);

/// <summary>A generated sample with the teacher's label probabilities.</summary>
internal sealed record ScoredSample(GeneratedSample Sample, float[] Probabilities);

/// <summary>
/// Append-only JSONL record of generated batches: a fingerprint line first (the run that wrote it), then one line per
/// sample and a "done" line per batch. A batch counts only once its "done" line is there, so a run killed mid-batch
/// regenerates that batch (with the same seed, the same samples). Completed extractions delete nothing: the file
/// documents what was generated.
/// </summary>
internal sealed class ExtractionCheckpoint : IDisposable
{
    private readonly string? _path;
    private readonly JsonObject _fingerprint;
    private readonly Dictionary<(int Label, int Batch), List<ScoredSample>> _done = new();
    private readonly Dictionary<(int Label, int Batch), double[]> _fluency = new();
    private readonly FileStream? _lock;

    /// <summary>Takes the checkpoint's lock for this run and reads what earlier runs finished.</summary>
    public ExtractionCheckpoint(string? path, int labels, JsonObject fingerprint, bool startFreshOnMismatch, ComponentHost host)
    {
        _path = path is null ? null : Path.GetFullPath(path);
        _fingerprint = fingerprint;
        if (_path is null) return;
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        _lock = CheckpointLock.Take(_path);
        try { Read(_path, labels, startFreshOnMismatch, host); }
        catch
        {
            _lock.Dispose();
            throw;
        }
    }

    public void Dispose() => _lock?.Dispose();

    private void Read(string path, int labels, bool startFreshOnMismatch, ComponentHost host)
    {
        if (!File.Exists(path) || new FileInfo(path).Length == 0) return;
        if (IsTornFingerprintLine(path))
        {
            // A kill during the run's first write: no batch was finished, so the file starts afresh (as CutTornLastLine cuts a
            // torn last line), instead of being refused as another run's checkpoint that holds no fingerprint.
            host.Info($"{path}: its fingerprint line is torn (a run was stopped writing it) and no batch was finished; the checkpoint starts afresh.");
            File.WriteAllBytes(path, []);
            return;
        }
        if (Mismatch(File.ReadLines(path).FirstOrDefault()) is { } mismatch)
        {
            if (!startFreshOnMismatch)
                throw new InvalidDataException($"{path}: this extraction checkpoint belongs to another run ({mismatch}). Delete it, choose another " +
                    "checkpoint path, or start fresh (KnowledgeExtractorOptions.StartFreshOnCheckpointMismatch) to move it aside.");
            // A name of its own: moved over an earlier run's moved-aside checkpoint, that run's generation was lost without a word.
            string aside = path + ".mismatched";
            for (int n = 2; File.Exists(aside); n++) aside = $"{path}.mismatched.{n}";
            File.Move(path, aside);
            host.Warning($"{path}: the checkpoint belongs to another run ({mismatch}); moved it to {aside} and starting fresh.");
            return;
        }
        CutTornLastLine(path);
        var pending = new Dictionary<(int, int), List<ScoredSample>>();
        int lineNumber = 1, lastWhole = 1; // lastWhole: the last line that ends a batch's record ("done", fluency), or the fingerprint
        string? damaged = null;
        foreach (var line in File.ReadLines(path).Skip(1))
        {
            lineNumber++;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { damaged = e.Message; break; }
            if (node is null) continue;
            try { ReadRecord(node); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                // Valid JSON that is not a record of this format (a field of another type, a null in the soft label): edited or
                // written by something else; one line naming it, not a bare exception from deep inside the resume.
                throw new InvalidDataException($"{path} line {lineNumber}: not an extraction checkpoint record ({e.Message}). Delete the file to start afresh.", e);
            }
        }
        // Cut what this run generates again, so that the next resume reads this run's lines for it, and reads them alone:
        // - a line that is not JSON inside the file (a torn last one is cut above; a kill under a version that did not cut
        //   torn lines glued the resumed run's first line to it), and everything after it, which used to be generated again
        //   on every resume;
        // - the lines of a batch a run was stopped writing (no "done" line), which the next resume read together with the
        //   lines this run writes for the same batch, so the batch held those samples twice.
        if (damaged is not null)
            host.Warning($"{path} line {lineNumber}: not JSON ({damaged}); the checkpoint is cut at line {lastWhole} and the batches after it are generated again.");
        else if (pending.Count > 0)
            host.Info($"{path}: lines {lastWhole + 1}-{lineNumber} are an unfinished batch (a run stopped while writing it); they are cut and the batch is generated again.");
        if (damaged is not null || pending.Count > 0)
            AtomicFile.WriteAllText(path, string.Concat(File.ReadLines(path).Take(lastWhole).Select(l => l + Environment.NewLine)));

        JsonNode Field(JsonNode node, string name) => node[name]
            ?? throw new InvalidDataException($"{path} line {lineNumber}: field '{name}' is missing; not an extraction checkpoint record. Delete the file to start afresh.");

        void ReadRecord(JsonNode node)
        {
            int label = Field(node, "label").GetValue<int>(), batch = Field(node, "batch").GetValue<int>();
            if (label < 0 || label >= labels) throw new InvalidDataException($"{path} line {lineNumber}: label index {label} is outside [0, {labels}); the checkpoint belongs to another task.");
            if (node["fluency_nll"] is JsonArray nll)
            {
                if (node["fluency"]?.GetValue<string>() == FluencyFilter.Version)
                    _fluency[(label, batch)] = nll.Select(v => v is null ? double.PositiveInfinity : v.GetValue<double>()).ToArray();
                lastWhole = lineNumber;
                return;
            }
            if (node["done"] is not null)
            {
                lastWhole = lineNumber;
                _done[(label, batch)] = pending.GetValueOrDefault((label, batch)) ?? [];
                pending.Remove((label, batch));
                return;
            }
            var sample = new GeneratedSample(label, Field(node, "text").GetValue<string>(), node["text2"]?.GetValue<string>(),
                Field(node, "generated").GetValue<string>(), Field(node, "tokens").GetValue<int>(), Field(node, "finished").GetValue<bool>());
            var probabilities = Field(node, "soft_label").AsArray().Select(v => (v ?? throw new InvalidDataException($"{path} line {lineNumber}: field 'soft_label' holds a null; not an extraction checkpoint record. Delete the file to start afresh.")).GetValue<float>()).ToArray();
            if (probabilities.Length != labels)
                throw new InvalidDataException($"{path} line {lineNumber}: soft label of {probabilities.Length} values, expected {labels} (one per label); the checkpoint belongs to another task.");
            if (KnowledgeStore.SoftLabelError(probabilities, labels) is { } error)
                throw new InvalidDataException($"{path} line {lineNumber}: {error} Delete the file to start afresh.");
            if (!pending.TryGetValue((label, batch), out var list)) pending[(label, batch)] = list = [];
            list.Add(new ScoredSample(sample, probabilities));
        }
    }

    /// <summary>
    /// Whether the file is the start of a fingerprint line and nothing else: no line end, and the bytes this format's first
    /// line starts with. Anything else without a line end (another tool's file) is left to the fingerprint check.
    /// </summary>
    private static bool IsTornFingerprintLine(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var buffer = new byte[4096];
        var start = "{\"fingerprint\":"u8;
        bool first = true;
        for (int n; (n = file.Read(buffer)) > 0; first = false)
        {
            if (first && !buffer.AsSpan(0, n).StartsWith(start[..Math.Min(start.Length, n)])) return false;
            if (Array.IndexOf(buffer, (byte)'\n', 0, n) >= 0) return false;
        }
        return true;
    }

    /// <summary>
    /// Cuts a last line without its line end (a kill during a write): what it held is generated again, and this run's
    /// lines would otherwise be appended to it, the first of them glued to its bytes, and every later resume would stop
    /// reading there.
    /// </summary>
    private static void CutTornLastLine(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        var buffer = new byte[4096];
        for (long end = file.Length; end > 0;)
        {
            int n = (int)Math.Min(buffer.Length, end);
            file.Position = end - n;
            file.ReadExactly(buffer, 0, n);
            int newline = Array.LastIndexOf(buffer, (byte)'\n', n - 1, n);
            if (newline == n - 1 && end == file.Length) return; // ends with a line end: nothing torn
            if (newline >= 0) { file.SetLength(end - n + newline + 1); return; }
            end -= n;
        }
        file.SetLength(0); // not even the fingerprint line is whole: the run starts the file afresh
    }

    /// <summary>What differs between the checkpoint's fingerprint line and this run's, or null when they match.</summary>
    private string? Mismatch(string? firstLine)
    {
        JsonObject? stored = null;
        try { stored = JsonNode.Parse(firstLine ?? "")?["fingerprint"] as JsonObject; }
        catch (JsonException) { }
        if (stored is null) return "line 1 holds no fingerprint: written by an older version or another tool";
        return SettingDifferences.Describe(stored, _fingerprint);
    }

    public List<ScoredSample>? TryGet(int label, int batch) => _done.GetValueOrDefault((label, batch));

    /// <summary>
    /// The fluency NLLs stored for a finished batch, or null when none were, or they were computed by another version of
    /// the fluency measure (<see cref="FluencyFilter.Version"/>), or their count is not the batch's.
    /// </summary>
    public double[]? TryGetFluency(int label, int batch, int samples) =>
        _fluency.GetValueOrDefault((label, batch)) is { } nll && nll.Length == samples ? nll : null;

    /// <summary>
    /// Stores a finished batch's fluency NLLs (a line after its <c>done</c> line; non-finite values as null), so a resumed
    /// run does not score the same texts again. The NLLs depend on the teacher and the template alone, both in the fingerprint.
    /// </summary>
    public void AppendFluency(int label, int batch, double[] nll)
    {
        if (_path is null || !File.Exists(_path)) return;
        using var writer = new StreamWriter(_path, append: true);
        writer.WriteLine(new JsonObject
        {
            ["label"] = label, ["batch"] = batch, ["fluency"] = FluencyFilter.Version,
            ["fluency_nll"] = new JsonArray(nll.Select(v => double.IsFinite(v) ? (JsonNode)v : null).ToArray()),
        }.ToJsonString());
        writer.Flush();
        writer.BaseStream.Flush();
    }

    public void Append(int label, int batch, List<ScoredSample> samples)
    {
        if (_path is null) return;
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        bool fresh = !File.Exists(_path) || new FileInfo(_path).Length == 0;
        using var writer = new StreamWriter(_path, append: true);
        if (fresh) writer.WriteLine(new JsonObject { ["fingerprint"] = _fingerprint.DeepClone() }.ToJsonString());
        foreach (var s in samples)
            writer.WriteLine(new JsonObject
            {
                ["label"] = label, ["batch"] = batch, ["text"] = s.Sample.Text, ["text2"] = s.Sample.Text2,
                ["generated"] = s.Sample.Generated, ["tokens"] = s.Sample.TokenCount, ["finished"] = s.Sample.Finished,
                ["soft_label"] = new JsonArray(s.Probabilities.Select(p => (JsonNode)p!).ToArray()),
            }.ToJsonString());
        writer.WriteLine(new JsonObject { ["label"] = label, ["batch"] = batch, ["done"] = true }.ToJsonString());
        writer.Flush();
        writer.BaseStream.Flush();
    }

}
