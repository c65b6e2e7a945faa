namespace RetriKT.TeacherServer;

/// <summary>How messages of a chat request become one prompt for the teacher.</summary>
public enum ChatPromptFormat
{
    /// <summary>The message contents joined by a newline, nothing added: what a base (non-chat) model continues naturally.</summary>
    Plain,
    /// <summary>"role: content" lines followed by "assistant:", for models tuned on such transcripts.</summary>
    RoleTags,
}

/// <summary>Settings of <see cref="TeacherServerApp"/>; each is also a command-line switch (<c>--ModelPath</c>, ...).</summary>
public sealed class TeacherServerOptions
{
    /// <summary>The teacher: a Hugging Face directory or a llama2.c <c>.bin</c> (tokenizer beside it). Required.</summary>
    public string ModelPath { get; set; } = "";
    /// <summary>Model id reported by <c>/v1/models</c> and in responses. Default: the checkpoint's file or folder name.</summary>
    public string? ModelId { get; set; }
    /// <summary>How long the batcher waits for more requests after the first one before a generation call, in ms. Default 5.</summary>
    public int BatchWindowMs { get; set; } = 5;
    /// <summary>Most rows (requests times <c>n</c>) in one generation call; a request's rows are never split, so one with a larger <c>n</c> runs alone. Default 64.</summary>
    public int MaxBatchRows { get; set; } = 64;
    /// <summary>Largest <c>max_tokens</c> a request may ask for. Default 512 (capped again by the model's context).</summary>
    public int MaxTokensLimit { get; set; } = 512;
    /// <summary>Largest <c>n</c>. Default 16.</summary>
    public int MaxChoices { get; set; } = 16;
    /// <summary>CUDA device for the teacher (needs a CUDA TorchSharp backend in place of TorchSharp-cpu); null: CPU. Resolved by RetriKT's one device policy.</summary>
    public int? GpuDeviceId { get; set; }
    /// <summary>With <see cref="GpuDeviceId"/> set but no CUDA: fall back to CPU with a warning (true, ML.NET's default) or fail (false).</summary>
    public bool FallbackToCpu { get; set; } = true;
    /// <summary>TorchSharp intra-op threads; 0 keeps torch's default (one per core). Small models on a busy machine run faster with 1.</summary>
    public int Threads { get; set; }
    /// <summary>Run one short generation (with log-probabilities) before listening, so the first client does not pay for start-up compilation. Default true.</summary>
    public bool WarmUp { get; set; } = true;
    /// <summary>Chat prompt rendering. Default <see cref="ChatPromptFormat.Plain"/>.</summary>
    public ChatPromptFormat ChatFormat { get; set; } = ChatPromptFormat.Plain;
}
