using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>A sample the tuned teacher generated for a label.</summary>
/// <param name="Label">Label index.</param>
/// <param name="Text">First text (the given context for second-part tasks).</param>
/// <param name="Text2">Second text for pair tasks (null when a whole pair sample lacked the separator).</param>
/// <param name="Generated">The raw generated part.</param>
/// <param name="TokenCount">Generated tokens.</param>
/// <param name="Finished">Ended at a stop token/sequence rather than the length limit.</param>
public sealed record GeneratedSample(int Label, string Text, string? Text2, string Generated, int TokenCount, bool Finished);

/// <summary>
/// The tuned soft prompts of <see cref="SoftPromptPpoTrainer"/> with a reference (name + SHA-256 content hash) to the
/// frozen teacher they belong to; a loaded model finds its teacher by that hash (<see cref="TeacherResolver"/>). Transform generates one sample per input row for that row's label (columns
/// <c>GeneratedText</c>, and <c>GeneratedText2</c> for pair tasks); <see cref="Generate"/> is the batched API the
/// KnowledgeExtractor uses. Loading a model.zip whose teacher is not found or has different weights fails with one
/// line naming the hash and the folders searched.
/// </summary>
public sealed class SoftPromptTransformer : RowMappingTransformer, IDisposable
{
    /// <summary>Since this version the teacher's dtype is stored (older files were written for a Float32 teacher only).</summary>
    private const uint TeacherDTypeVersion = 0x00010002;
    internal static readonly ModelFormat Format = new("RKTSPPPO", TeacherDTypeVersion, 0x00010001, "RetriKTSoftPromptPpo") { LoaderAssembly = typeof(SoftPromptTransformer).Assembly };

    private readonly float[] _labelPrompts;
    private readonly float[]? _taskPrompt;
    private readonly object _generateLock = new();
    private TeacherModel? _teacher;
    private readonly bool _ownsTeacher;
    private bool _disposed;

    internal SoftPromptTransformer(IHostEnvironment env, string teacherPath, string teacherHash, ScalarType teacherDType, TaskTemplate template, IReadOnlyList<string> labels,
        string labelColumn, float[] labelPrompts, float[]? taskPrompt, int promptTokens, int taskPromptTokens, int hidden,
        double temperature, int maxNewTokens, int seed, TeacherModel? teacher, bool ownsTeacher, SoftPromptTrainingReport? report)
    {
        TeacherPath = teacherPath;
        TeacherHash = teacherHash;
        TeacherDType = teacherDType;
        Template = template;
        _labels = labels.ToArray();
        LabelColumnName = labelColumn;
        _labelPrompts = labelPrompts;
        _taskPrompt = taskPrompt;
        PromptTokens = promptTokens;
        TaskPromptTokens = taskPromptTokens;
        Hidden = hidden;
        Temperature = temperature;
        MaxNewTokens = maxNewTokens;
        Seed = seed;
        _teacher = teacher;
        _ownsTeacher = ownsTeacher;
        TrainingReport = report;
        if (labelPrompts.Length != Labels.Count * promptTokens * hidden)
            throw new InvalidDataException($"Soft prompts hold {labelPrompts.Length} values, expected {Labels.Count} × {promptTokens} × {hidden}.");
    }

    /// <summary>
    /// SHA-256 (hex) of everything that shapes what these prompts generate: the teacher's content hash, the template,
    /// the labels, the prompt values and the sampling settings. Equal hashes mean the same generator; the
    /// KnowledgeExtractor's checkpoint carries it so another run's samples are never reused.
    /// </summary>
    internal string ContentHash()
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        sha.AppendData(System.Text.Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new object[]
        {
            TeacherHash, JsonSerializer.Serialize(Template), Labels, PromptTokens, TaskPromptTokens, Hidden, Temperature, MaxNewTokens, Seed,
        })));
        sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_labelPrompts.AsSpan()));
        sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes((_taskPrompt ?? []).AsSpan()));
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Path of the teacher the prompts were tuned for.</summary>
    public string TeacherPath { get; }
    /// <summary>SHA-256 content hash of that teacher (<see cref="TeacherModel.ContentHash"/>).</summary>
    public string TeacherHash { get; }
    /// <summary>
    /// The dtype that teacher was loaded in: its content hash covers it, so a loaded model loads the teacher in it again
    /// (a BFloat16 teacher found as Float32 would not be the one the prompts were tuned for).
    /// </summary>
    public ScalarType TeacherDType { get; }
    /// <summary>The task template.</summary>
    public TaskTemplate Template { get; }
    /// <summary>Labels, in prompt order.</summary>
    public IReadOnlyList<string> Labels => _labels;
    private readonly string[] _labels;
    /// <summary>Label column read by Transform.</summary>
    public string LabelColumnName { get; }
    /// <summary>Virtual tokens per label prompt.</summary>
    public int PromptTokens { get; }
    /// <summary>Virtual tokens of the shared task prompt.</summary>
    public int TaskPromptTokens { get; }
    /// <summary>Teacher hidden size.</summary>
    public int Hidden { get; }
    /// <summary>Sampling temperature.</summary>
    public double Temperature { get; }
    /// <summary>Most new tokens per sample.</summary>
    public int MaxNewTokens { get; }
    /// <summary>Base seed of generation.</summary>
    public int Seed { get; }
    /// <summary>Metrics of the training run (null after loading from model.zip).</summary>
    public SoftPromptTrainingReport? TrainingReport { get; }

    /// <summary>Trainable parameters of the prompts (the only part of the teacher pipeline that was tuned).</summary>
    public long PromptParameterCount => _labelPrompts.Length + (_taskPrompt?.Length ?? 0);

    /// <summary>The teacher (loaded and hash-checked on first use after loading from model.zip).</summary>
    public TeacherModel Teacher
    {
        get
        {
            lock (_generateLock) return TeacherUnderLock();
        }
    }

    /// <summary>
    /// Runs <paramref name="use"/> with the teacher under Generate's lock, so that <see cref="Dispose"/> waits for it: a
    /// caller that only read <see cref="Teacher"/> could have its tensors freed under its forward pass.
    /// </summary>
    internal T WithTeacher<T>(Func<TeacherModel, T> use)
    {
        lock (_generateLock) return use(TeacherUnderLock());
    }

    /// <summary>
    /// The teacher the prompts were tuned for, found by content hash through <see cref="TeacherResolver"/> (the
    /// recorded path gives its name and the last folder searched; a moved teacher is found in the resolver's folders).
    /// </summary>
    internal static TeacherModel LoadTeacher(string path, string expectedHash, ScalarType dtype, Device? device) => TeacherResolver.Resolve(path, expectedHash, dtype, device).Teacher;

    /// <summary>
    /// Generates <paramref name="count"/> samples for label <paramref name="label"/> in batches. For second-part tasks,
    /// <paramref name="contexts"/> supplies first parts (cycled). Same seed, same samples. <paramref name="cancellation"/>
    /// stops it at the next token (<see cref="OperationCanceledException"/>). A context that leaves the teacher fewer than
    /// <see cref="MaxNewTokens"/> positions after the soft prompt is refused, naming it (<c>contexts[i]</c>).
    /// </summary>
    public IReadOnlyList<GeneratedSample> Generate(int label, int count, long seed, IReadOnlyList<string>? contexts = null, int batchSize = 16,
        CancellationToken cancellation = default) => GenerateNamingContexts(label, count, seed, contexts, batchSize, cancellation, i => $"contexts[{i}]");

    /// <summary><see cref="Generate(int, int, long, IReadOnlyList{string}, int, CancellationToken)"/>, naming a context that does not fit as <paramref name="where"/> of its index.</summary>
    private IReadOnlyList<GeneratedSample> GenerateNamingContexts(int label, int count, long seed, IReadOnlyList<string>? contexts, int batchSize,
        CancellationToken cancellation, Func<int, string> where)
    {
        if ((uint)label >= (uint)Labels.Count) throw new ArgumentOutOfRangeException(nameof(label), $"Label index {label} is outside [0, {Labels.Count}).");
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), $"count must be >= 0, found {count}.");
        // The batch loop advances by batchSize: 0 or less would never end.
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be positive, found {batchSize}.");
        if (Template.Target == GenerationTarget.SecondPart && (contexts is null || contexts.Count == 0))
            throw new ArgumentException($"Template '{Template.Name}' generates second parts: give first-part contexts.", nameof(contexts));
        var result = new List<GeneratedSample>(count);
        lock (_generateLock)
        {
            var teacher = TeacherUnderLock();
            using var prompts = CreateModule(teacher.Device);
            var policy = new SoftPromptPolicy(teacher, Template, prompts, null!);
            // A context that nearly fit had its samples cut at whatever room it left (8 of 24 tokens, "unfinished"), without
            // a word; one that did not fit failed inside the teacher naming a batch slot, not the context or the row.
            if (Template.Target == GenerationTarget.SecondPart)
                for (int i = 0; i < Math.Min(count, contexts!.Count); i++) policy.CheckGenerationFits(Template.RenderContext(contexts[i]), MaxNewTokens, where(i));
            for (int start = 0, batch = 0; start < count; start += batchSize, batch++)
            {
                cancellation.ThrowIfCancellationRequested();
                int n = Math.Min(batchSize, count - start);
                var requests = Enumerable.Range(start, n).Select(i => (label,
                    Template.Target == GenerationTarget.SecondPart ? Template.RenderContext(contexts![i % contexts.Count]) : "")).ToList();
                foreach (var r in policy.Sample(requests, MaxNewTokens, Temperature, SeedMixer.Derive(seed, "soft-prompt-generation", batch), cancellation))
                {
                    var (text, text2) = policy.SampleOf(r);
                    result.Add(new GeneratedSample(label, text, text2, r.Generated, r.ResponseIds.Length, r.Finished));
                }
            }
        }
        return result;
    }

    /// <summary>
    /// For a template that generates second parts: throws, naming the first that does not fit (<paramref name="where"/> of
    /// its index), when a context leaves fewer than <see cref="MaxNewTokens"/> of the teacher's positions after the soft
    /// prompt (<see cref="SoftPromptPolicy.CheckGenerationFits"/>). Checked before an extraction, not when a batch first
    /// draws the context.
    /// </summary>
    internal void CheckContextsFit(IReadOnlyList<string> contexts, Func<int, string> where)
    {
        if (Template.Target != GenerationTarget.SecondPart) return;
        lock (_generateLock)
        {
            var teacher = TeacherUnderLock();
            using var prompts = CreateModule(teacher.Device);
            var policy = new SoftPromptPolicy(teacher, Template, prompts, null!);
            for (int i = 0; i < contexts.Count; i++) policy.CheckGenerationFits(Template.RenderContext(contexts[i]), MaxNewTokens, where(i));
        }
    }

    private SoftPromptModule CreateModule(Device device)
    {
        using var scope = NewDisposeScope();
        var module = new SoftPromptModule(tensor(_labelPrompts, [Labels.Count, PromptTokens, Hidden]),
            _taskPrompt is null ? null : tensor(_taskPrompt, [TaskPromptTokens, Hidden]));
        module.to(device);
        return module;
    }

    internal static IReadOnlyList<string> OutputNames(TaskTemplate template) => template.IsPair ? ["GeneratedText", "GeneratedText2"] : ["GeneratedText"];

    private protected override RowMapping CreateMapping(DataViewSchema inputSchema) => new Mapping(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        w.WriteString(Path.GetFullPath(TeacherPath));
        w.WriteString(TeacherHash);
        w.WriteString(JsonSerializer.Serialize(Template));
        w.WriteString(LabelColumnName);
        w.Writer.Write(Labels.Count);
        foreach (var l in Labels) w.WriteString(l);
        w.Writer.Write(PromptTokens);
        w.Writer.Write(TaskPromptTokens);
        w.Writer.Write(Hidden);
        w.Writer.Write(Temperature);
        w.Writer.Write(MaxNewTokens);
        w.Writer.Write(Seed);
        w.Writer.Write((int)TeacherDType);
        w.WriteStream("Prompts.bin", s =>
        {
            s.Write(_labelPrompts.Length);
            foreach (var x in _labelPrompts) s.Write(x);
            s.Write(_taskPrompt?.Length ?? 0);
            foreach (var x in _taskPrompt ?? []) s.Write(x);
        });
    });

    internal static SoftPromptTransformer Load(ModelReader r)
    {
        var teacherPath = r.ReadString();
        var teacherHash = r.ReadString();
        var template = JsonSerializer.Deserialize<TaskTemplate>(r.ReadString()) ?? throw new InvalidDataException("model.zip: soft prompt template is empty.");
        var labelColumn = r.ReadString();
        int labelCount = r.Reader.ReadInt32();
        if (labelCount < 2 || labelCount > 10_000) throw new InvalidDataException($"model.zip: soft prompt label count {labelCount} is out of range.");
        var labels = Enumerable.Range(0, labelCount).Select(_ => r.ReadString()).ToArray();
        int promptTokens = r.Reader.ReadInt32(), taskTokens = r.Reader.ReadInt32(), hidden = r.Reader.ReadInt32();
        double temperature = r.Reader.ReadDouble();
        int maxNew = r.Reader.ReadInt32(), seed = r.Reader.ReadInt32();
        var dtype = r.Version >= TeacherDTypeVersion ? (ScalarType)r.Reader.ReadInt32() : ScalarType.Float32;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new InvalidDataException($"model.zip: the soft prompts' teacher dtype {(int)dtype} is not one a teacher loads in (Float32, Float16, BFloat16).");
        float[] labelPrompts = [], taskPrompt = [];
        r.ReadStream("Prompts.bin", s =>
        {
            float[] ReadFloats(long expected)
            {
                int n = s.ReadInt32();
                if (n != expected) throw new InvalidDataException($"model.zip: Prompts.bin holds {n} values, expected {expected}.");
                var values = new float[n];
                for (int i = 0; i < n; i++) values[i] = s.ReadSingle();
                return values;
            }
            labelPrompts = ReadFloats((long)labelCount * promptTokens * hidden);
            taskPrompt = ReadFloats((long)taskTokens * hidden);
        });
        // The stored template must still cover the stored labels (a word per label, distinct words): checked here, before
        // the teacher loads, rather than in the first Generate or SoftLabel.
        template.Validate(labels);
        var env = r.Environment;
        var device = new ComponentHost(env, nameof(SoftPromptTransformer)).ResolveDevice();
        var (teacher, foundAt) = TeacherResolver.Resolve(teacherPath, teacherHash, dtype, device);
        try
        {
            CheckFits(teacher, foundAt, hidden);
            return new SoftPromptTransformer(env, foundAt, teacherHash, dtype, template, labels, labelColumn, labelPrompts,
                taskTokens > 0 ? taskPrompt : null, promptTokens, taskTokens, hidden, temperature, maxNew, seed, teacher, ownsTeacher: true, report: null);
        }
        catch
        {
            teacher.Dispose(); // loaded for this model only: a refused model must not keep it in (GPU) memory
            throw;
        }
    }

    /// <summary>
    /// Refuses prompts whose width is not the teacher's hidden size, in one line naming both, instead of the TorchSharp
    /// shape error the first generation would throw far from the load. (The content hash makes this a teacher the
    /// prompts were tuned for; the check guards against a model.zip written by another build or edited by hand.)
    /// </summary>
    internal static void CheckFits(TeacherModel teacher, string teacherPath, int hidden)
    {
        if (hidden != teacher.Config.HiddenSize)
            throw new InvalidDataException($"model.zip: the soft prompts are {hidden} wide, but the teacher found at '{teacherPath}' has hidden size " +
                $"{teacher.Config.HiddenSize}: they were not tuned for this teacher.");
    }

    /// <summary>The teacher, loaded on first use; the caller holds <c>_generateLock</c>. A disposed transformer says so.</summary>
    private TeacherModel TeacherUnderLock()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _teacher ??= LoadTeacher(TeacherPath, TeacherHash, TeacherDType, null);
    }

    /// <summary>
    /// Releases the teacher when this transformer loaded it, after a generation in flight on another thread has finished;
    /// later calls that need the teacher throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        // Under Generate's lock: a model dropped while another thread generates with it (a reload, a scope ending) would
        // free the teacher's tensors under that thread's forward pass.
        lock (_generateLock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_ownsTeacher) _teacher?.Dispose();
        }
    }

    private sealed class Mapping : RowMapping
    {
        private readonly SoftPromptTransformer _parent;
        private readonly DataViewSchema.Column _label;
        private readonly DataViewSchema.Column? _text;
        private readonly Func<DataViewRow, Func<string>> _labelReader;

        public Mapping(SoftPromptTransformer parent, DataViewSchema schema) : base(schema)
        {
            _parent = parent;
            _label = schema.GetColumnOrNull(parent.LabelColumnName)
                ?? throw new ArgumentOutOfRangeException(nameof(schema), $"Label column '{parent.LabelColumnName}' not found.");
            _labelReader = SoftPromptPpoTrainer.LabelReader(_label); // also validates the type
            if (parent.Template.Target == GenerationTarget.SecondPart)
            {
                // Only the first part: the second is what the prompts generate.
                parent.Template.CheckTextColumns(SchemaShapes.Of(schema), firstOnly: true);
                _text = schema[parent.Template.TextColumn];
            }
            Outputs = OutputNames(parent.Template).Select(n => new OutputColumn(n, TextDataViewType.Instance)).ToList();
            Dependencies = _text is { } t ? [_label, t] : [_label];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }
        public override IReadOnlyList<DataViewSchema.Column> Dependencies { get; }

        public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
        {
            var readLabel = _labelReader(input);
            var getText = _text is { } t ? input.GetGetter<ReadOnlyMemory<char>>(t) : null;
            var getId = input.GetIdGetter();
            DataViewRowId id = default;
            long cachedPosition = -1;
            GeneratedSample? cached = null;
            ReadOnlyMemory<char> text = default;
            GeneratedSample Current()
            {
                if (cachedPosition == input.Position && cached is not null) return cached;
                var label = readLabel();
                int index = Array.IndexOf(_parent._labels, label);
                if (index < 0) throw new InvalidOperationException($"Row {input.Position}: label '{label}' is not one of [{string.Join(", ", _parent.Labels)}].");
                string[]? contexts = null;
                if (getText is not null) { getText(ref text); contexts = [text.ToString()]; }
                // Seeded by the row's id, which every cursor gives the row, not by its position, which a shuffled cursor
                // gives another row; a plain view's id is its position, as the seed was before.
                getId(ref id);
                long seed = id.High == 0
                    ? SeedMixer.Derive(_parent.Seed, "soft-prompt-row", (long)id.Low)
                    : SeedMixer.Derive(_parent.Seed, "soft-prompt-row", (long)id.Low, (long)id.High);
                cached = _parent.GenerateNamingContexts(index, 1, seed, contexts, batchSize: 1, cancellation: default, where: _ => $"Row {input.Position}")[0];
                cachedPosition = input.Position;
                return cached;
            }
            var getters = new Delegate?[Outputs.Count];
            getters[0] = (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> dst) =>
                dst = (_parent.Template.Target == GenerationTarget.SecondPart ? Current().Text2 ?? "" : Current().Text).AsMemory());
            if (getters.Length > 1)
                getters[1] = (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> dst) =>
                    dst = (_parent.Template.Target == GenerationTarget.SecondPart ? Current().Text : Current().Text2 ?? "").AsMemory());
            return getters;
        }
    }
}
