namespace RetriKT.MLNet.Student;

/// <summary>How the student turns token states into one sentence embedding.</summary>
public enum StudentPooling
{
    /// <summary>Mean of the final token states over real (non-padding) tokens. Robust for tiny from-scratch encoders.</summary>
    Mean = 0,
    /// <summary>The final state of the [CLS] token (BERT style).</summary>
    Cls = 1,
}

/// <summary>Shape of the student network (persisted in model.zip; the weights are only valid for this shape).</summary>
internal sealed record StudentConfig(int VocabularySize, int HiddenSize, int Layers, int Heads, int FeedForwardSize,
    int MaxLength, StudentPooling Pooling, int LabelCount, double Dropout)
{
    public int HeadSize => HiddenSize / Heads;

    /// <summary>
    /// 0: one <see cref="HiddenSize"/>-wide vector per token (<c>wte.weight</c> [V, H]). r &gt; 0: the token embeddings
    /// are factored as [V, r] × [r, H] (<c>wte.weight</c> and <c>wte_proj.weight</c> [H, r], ALBERT style), so a large
    /// vocabulary costs V·r parameters. Not written with the shape: a saved model's rank is read off its weights.
    /// </summary>
    public int EmbeddingRank { get; init; }

    public void Validate()
    {
        void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(nameof(StudentConfig), message); }
        Check(VocabularySize >= 6, $"Vocabulary size must be at least 6, found {VocabularySize}.");
        Check(HiddenSize >= 4, $"HiddenSize must be at least 4, found {HiddenSize}.");
        Check(Layers >= 0, $"Layers must be >= 0, found {Layers}.");
        Check(Heads >= 1 && HiddenSize % Heads == 0, $"HiddenSize ({HiddenSize}) must be a positive multiple of Heads ({Heads}).");
        Check(FeedForwardSize >= 1, $"FeedForwardSize must be positive, found {FeedForwardSize}.");
        Check(MaxLength >= 3, $"MaxLength must be at least 3 ([CLS], a token, [SEP]), found {MaxLength}.");
        Check(LabelCount >= 2, $"At least 2 labels are needed, found {LabelCount}.");
        Check(Dropout >= 0 && Dropout < 1, $"Dropout must be in [0, 1), found {Dropout}.");
        Check(EmbeddingRank >= 0, $"EmbeddingRank must be >= 0, found {EmbeddingRank}.");
    }

    /// <summary>Parameters of a network of this shape (embeddings, blocks, head, temperature), computed analytically.</summary>
    public long ParameterCount => EmbeddingParameterCount + Layers * BlockParameterCount + 2L * HiddenSize + (long)HiddenSize * LabelCount + LabelCount + 1;

    /// <summary>Token (whole or factored), position and segment embeddings.</summary>
    public long EmbeddingParameterCount => EmbeddingRank > 0
        ? (long)VocabularySize * EmbeddingRank + (long)EmbeddingRank * HiddenSize + (long)(MaxLength + 2) * HiddenSize
        : (long)(VocabularySize + MaxLength + 2) * HiddenSize;

    /// <summary>Name of the factored embeddings' projection [H, r] in the weights; absent when <see cref="EmbeddingRank"/> is 0.</summary>
    public const string EmbeddingProjectionName = "wte_proj.weight";

    private long BlockParameterCount
    {
        get
        {
            long h = HiddenSize, f = FeedForwardSize;
            return 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h);
        }
    }
}
