"""Uploading a finished model folder to the Hugging Face Hub, with one clear error when the Hub cannot be reached."""


def push_folder_to_hub(
    folder: str,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload Myna",
    ignore_patterns: list[str] | None = None,
) -> str:
    """Uploads `folder` (weights, config, feature extractor, model card) as `repo_id`; returns the repository URL.

    Raises `RuntimeError` naming the folder (the model stays saved there) and what to check when the upload fails.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id, folder_path=folder, ignore_patterns=ignore_patterns, commit_message=commit_message
        )
    except Exception as error:
        raise RuntimeError(
            f"could not push {folder} to the Hub as {repo_id}: {error}. The model is saved in {folder}; check the "
            "network and `hf auth login`, then upload it with `hf upload` or rerun with --push_to_hub."
        ) from error
    return f"https://huggingface.co/{repo_id}"


__all__ = ["push_folder_to_hub"]
